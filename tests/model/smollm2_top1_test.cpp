// The default model against two oracles on ten fixed prompts:
//  - transformers loading the same GGUF (tests/fixtures/smollm2/top1_transformers.json): every tensor
//    dequantized to f32, i.e. the exact math of the quantized weights. Kestrel's default kernels must
//    agree on the top-1 next token at >= 99% of positions.
//  - llama.cpp (tests/fixtures/smollm2/top1.json): token ids must be identical. Its top-1 choices carry
//    the noise of its 8-bit activation quantization (this model has large activation outliers):
//    llama.cpp itself agrees with transformers on only 410/426 positions, so against it we require that
//    every disagreement is a near-tie within its top 5 and report the rate.
#include <gtest/gtest.h>

#include "../common/skip_or_fail.h"
#include "top1_oracle.h"

namespace kestrel {
namespace {

using test::Agreement;
using test::compare;

std::unique_ptr<Model> default_model_or_skip() {
  const std::string path = test::default_model();
  return path.empty() ? nullptr : load_model(path);
}

nlohmann::json fixture(const std::string& name) {
  return test::top1_fixture("smollm2/" + name);
}

TEST(SmolLM2, Top1MatchesTransformersOnTheSameGguf) {
  auto model = default_model_or_skip();
  if (!model) KS_SKIP_OR_FAIL("default model not cached; run scripts/setup.sh");
  const Agreement a = compare(*model, fixture("top1_transformers.json"), false);
  test::print_agreement("SmolLM2 top-1 vs transformers", a);
  // The 16-bit activation path is within 0.007 of transformers' f32 logits on every top-5 entry of every
  // position (the fixture rounds to 1e-4); 8-bit activations move them by 0.1-0.4 (ARCHITECTURE.md). So a
  // top-1 that differs is only allowed where the oracle's own top two are within twice that bound.
  EXPECT_LT(a.max_error, 0.02f);
  EXPECT_LE(a.worst_gap, 0.04f);
}

TEST(SmolLM2, TokensMatchLlamaCppAndTop1DiffersOnlyAtNearTies) {
  auto model = default_model_or_skip();
  if (!model) KS_SKIP_OR_FAIL("default model not cached; run scripts/setup.sh");
  const Agreement a = compare(*model, fixture("top1.json"), true);
  test::print_agreement("SmolLM2 top-1 vs llama.cpp", a);
  EXPECT_FALSE(a.outside_top5);
  // llama.cpp's own distance from exact math on these prompts (top-1 on 410/426 positions; where it
  // differs from transformers, transformers' choice is at most 0.21 below llama.cpp's top logit) bounds
  // how close any exact implementation can get.
  EXPECT_LT(a.worst_gap, 0.3f);
  EXPECT_GE(static_cast<double>(a.same) / a.positions, 0.95);
}

}  // namespace
}  // namespace kestrel
