// Comparing a model's next-token predictions with an oracle's per-position top-1 / top-5 fixture
// (scripts/reference/make_top1.py, make_top1_transformers.py): the SmolLM2 and Gemma 3 tests share it.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../common/sanitizers.h"
#include "engine/sampler.h"
#include "engine/session.h"
#include "model/model.h"
#include "test_paths.h"

namespace kestrel::test {

struct Agreement {
  int64_t positions = 0, same = 0;
  float worst_gap = 0;  // largest oracle logit gap between its top-1 and our choice
  float max_error = 0;  // largest |ours - oracle| over the oracle's top-5 logits of every position
  bool outside_top5 = false;
};

// Every case of `ref` as one prefill on `ctx` (the CPU by default) with a `kv` cache; logits of every row.
inline Agreement compare(const Model& model, const nlohmann::json& ref, bool check_tokens, const ops::Context& ctx = {},
                         DType kv = DType::F32) {
  Agreement a;
  const int64_t V = model.config().vocab;
  for (size_t k = 0; k < ref["cases"].size(); ++k) {
    if (!runs_case(k)) continue;
    const auto& c = ref["cases"][k];
    const auto ids = c["token_ids"].get<std::vector<int32_t>>();
    if (check_tokens)
      EXPECT_EQ(model.tokenizer->encode(c["text"].get<std::string>(), true, c["parse_special"].get<bool>()), ids)
          << "tokenization of case " << c["name"];
    Session s(*model.decoder, ctx, SessionOptions{.n_ctx = 2048, .kv_format = KvFormat::plain(kv)});
    Tensor logits = s.feed(ids, /*all_logits=*/true);
    const auto top1 = c["top1"].get<std::vector<int32_t>>();
    for (size_t i = 0; i < top1.size(); ++i) {
      const float* row = logits.ptr<float>() + i * V;
      const int32_t ours = argmax(std::span<const float>(row, V));
      const auto ids5 = c["top5_ids"][i].get<std::vector<int32_t>>();
      const auto log5 = c["top5_logits"][i].get<std::vector<float>>();
      for (size_t j = 0; j < ids5.size(); ++j) a.max_error = std::max(a.max_error, std::fabs(row[ids5[j]] - log5[j]));
      ++a.positions;
      if (ours == top1[i]) {
        ++a.same;
        continue;
      }
      const auto it = std::find(ids5.begin(), ids5.end(), ours);
      if (it == ids5.end()) {
        a.outside_top5 = true;
        ADD_FAILURE() << c["name"] << " position " << i << ": kestrel picks " << ours << ", outside the oracle's top 5";
        continue;
      }
      a.worst_gap = std::max(a.worst_gap, log5[0] - log5[it - ids5.begin()]);
    }
  }
  return a;
}

inline nlohmann::json top1_fixture(const std::string& rel) {
  std::ifstream in(fixture(rel));
  EXPECT_TRUE(in.good()) << rel;
  return nlohmann::json::parse(in);
}

inline void print_agreement(const char* what, const Agreement& a) {
  std::printf("%s: %lld / %lld = %.2f%% (worst gap %.3f, max top-5 logit error %.4f)\n", what,
              static_cast<long long>(a.same), static_cast<long long>(a.positions), 100.0 * a.same / a.positions,
              a.worst_gap, a.max_error);
}

}  // namespace kestrel::test
