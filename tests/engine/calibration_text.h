// The calibration text of the weight-quantization tests: the fixture play's first n tokens under m's tokenizer.
#pragma once

#include <algorithm>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "../model/test_paths.h"
#include "model/model.h"

namespace kestrel::test {

inline std::vector<int32_t> calibration(const Model& m, size_t n) {
  std::ifstream in(fixture("text/hamlet_act1_2.txt"), std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  std::vector<int32_t> t = m.tokenizer->encode(text, false, false);
  t.resize(std::min(n, t.size()));
  return t;
}

}  // namespace kestrel::test
