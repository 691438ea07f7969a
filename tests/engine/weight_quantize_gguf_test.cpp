// GPTQ's and AWQ's codes written into GGUF blocks (model/gguf_quantize.h, write_gguf_codes): the file loads
// back to the codes in memory (exactly for Q4_0 and Q8_0; Q4_1 within the f16 rounding of its minimum), AWQ's
// folded norms to the values folded, every other tensor unchanged; settings no GGUF type holds are refused.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>

#include "../formats/test_files.h"
#include "../model/test_paths.h"
#include "backends/backends.h"
#include "calibration_text.h"
#include "core/error.h"
#include "core/linear.h"
#include "engine/weight_quantize.h"
#include "formats/gguf.h"
#include "model/gguf_quantize.h"
#include "model/model.h"
#include "ops/context.h"

namespace kestrel {
namespace {

const std::string kModel = test::fixture("models/tiny-llama-f32.gguf");

QuantizedWeights quantize(const Model& m, WeightQuantMethod method, quant::IntQuantSpec spec) {
  WeightQuantOptions opt;
  opt.method = method;
  opt.spec = spec;
  opt.n_ctx = 64;
  return quantize_weights(*m.decoder, backends::make_context(Device::Cpu), test::calibration(m, 256), opt);
}

struct Case {
  WeightQuantMethod method;
  quant::IntQuantSpec spec;
  DType type;
};

class GgufCodes : public ::testing::TestWithParam<Case> {};

TEST_P(GgufCodes, LoadBackToTheCodesInMemory) {
  const Case& cs = GetParam();
  auto m = load_model(kModel);
  const QuantizedWeights q = quantize(*m, cs.method, cs.spec);
  ASSERT_EQ(gguf_type_for(cs.spec), cs.type);
  test::ScratchDir dir;
  const std::string out = dir.path("out.gguf");
  const QuantizeSummary s = write_gguf_codes(
      kModel, out, q.linears, q.folded, {{"kestrel.quantize.method", GgufValue(GgufValue::Storage(std::string("x")))}});
  EXPECT_EQ(s.quantized, static_cast<int>(q.linears.size()));
  EXPECT_EQ(s.by_type.at(std::string(dtype_name(cs.type))), static_cast<int>(q.linears.size()));

  const auto file = GgufFile::open(out);
  ASSERT_NE(file->find("kestrel.quantize.method"), nullptr);
  auto back = load_model(out);
  const DecoderWeights& w = back->decoder->weights();
  for (const LayerWeights& L : w.layers)
    for (const Linear* l : L.linears()) {
      if (l->empty()) continue;
      const std::string name = l->id.name() + ".weight";
      ASSERT_TRUE(q.linears.contains(name)) << name;
      ASSERT_EQ(l->weight.dtype, cs.type) << name;
      const quant::IntQuantized& iq = q.linears.at(name);
      const std::vector<float> want = iq.dequantize();
      std::vector<float> row(static_cast<size_t>(iq.k));
      for (int64_t r = 0; r < iq.n; ++r) {
        dequantize_row(*l, r, row.data());
        for (int64_t k = 0; k < iq.k; ++k) {
          const float expect = want[r * iq.k + k];
          if (cs.type != DType::Q4_1) {
            ASSERT_EQ(row[k], expect) << name << " [" << r << ", " << k << "]";
            continue;
          }
          // d * q + m with m = f16(-s * z): off by the rounding of m (half an f16 ulp of s * z) and f32's.
          const int64_t g = k / 32;
          const float scale = iq.scales[r * iq.groups() + g], sz = scale * iq.zeros[r * iq.groups() + g];
          ASSERT_NEAR(row[k], expect, std::ldexp(sz, -11) + 1e-6f * (std::abs(expect) + sz))
              << name << " [" << r << ", " << k << "]";
        }
      }
    }
  EXPECT_EQ(q.folded.empty(), cs.method != WeightQuantMethod::Awq);
  for (const auto& [name, values] : q.folded) {
    const Tensor t = file->tensor(name);
    ASSERT_EQ(t.dtype, DType::F32) << name;
    ASSERT_EQ(t.numel(), static_cast<int64_t>(values.size())) << name;
    EXPECT_EQ(std::memcmp(t.data, values.data(), t.nbytes()), 0) << name;
  }
  // What was neither quantized nor folded keeps its bytes.
  const auto src = GgufFile::open(kModel);
  for (const GgufTensorInfo& info : src->tensors()) {
    if (q.linears.contains(info.name) || q.folded.contains(info.name)) continue;
    const Tensor a = src->tensor(info.name), b = file->tensor(info.name);
    ASSERT_EQ(a.nbytes(), b.nbytes()) << info.name;
    EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes()), 0) << info.name;
  }
}

INSTANTIATE_TEST_SUITE_P(Types, GgufCodes,
                         ::testing::Values(Case{WeightQuantMethod::Gptq, {4, 32, false}, DType::Q4_1},
                                           Case{WeightQuantMethod::Gptq, {4, 32, true}, DType::Q4_0},
                                           Case{WeightQuantMethod::Rtn, {8, 32, true}, DType::Q8_0},
                                           Case{WeightQuantMethod::Awq, {4, 32, false}, DType::Q4_1}));

TEST(GgufCodes, RefusesCodesNoTypeHolds) {
  EXPECT_FALSE(gguf_type_for({3, 32, false}).has_value());
  EXPECT_FALSE(gguf_type_for({4, 128, false}).has_value());
  EXPECT_FALSE(gguf_type_for({8, 32, false}).has_value());
  auto m = load_model(kModel);
  test::ScratchDir dir;
  const std::string out = dir.path("out.gguf");
  const QuantizedWeights q3 = quantize(*m, WeightQuantMethod::Rtn, {3, 32, false});
  try {
    write_gguf_codes(kModel, out, q3.linears, {}, {});
    FAIL() << "3-bit codes were written";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no GGUF type"), std::string::npos) << e.what();
  }
  QuantizedWeights renamed = quantize(*m, WeightQuantMethod::Rtn, {4, 32, false});
  auto node = renamed.linears.extract(renamed.linears.begin());
  node.key() = "blk.0.attn_qkv.weight";  // a name the file does not have
  renamed.linears.insert(std::move(node));
  try {
    write_gguf_codes(kModel, out, renamed.linears, {}, {});
    FAIL() << "a linear the file lacks was dropped silently";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("are not in"), std::string::npos) << e.what();
  }
  std::ifstream f(out);
  EXPECT_FALSE(f.good()) << "a refused file was left behind";
}

}  // namespace
}  // namespace kestrel
