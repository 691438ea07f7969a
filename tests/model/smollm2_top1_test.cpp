// The default model against two oracles on ten fixed prompts:
//  - transformers loading the same GGUF (tests/fixtures/smollm2/top1_transformers.json): every tensor
//    dequantized to f32, i.e. the exact math of the quantized weights. Kestrel's default kernels must
//    agree on the top-1 next token at >= 99% of positions.
//  - llama.cpp (tests/fixtures/smollm2/top1.json): token ids must be identical. Its top-1 choices carry
//    the noise of its 8-bit activation quantization (this model has large activation outliers):
//    llama.cpp itself agrees with transformers on only 410/426 positions, so against it we require that
//    every disagreement is a near-tie within its top 5 and report the rate.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../common/sanitizers.h"
#include "../common/skip_or_fail.h"
#include "engine/sampler.h"
#include "engine/session.h"
#include "model/model.h"
#include "test_paths.h"

namespace kestrel {
namespace {

struct Agreement {
  int64_t positions = 0, same = 0;
  float worst_gap = 0;  // largest oracle logit gap between its top-1 and our choice
  float max_error = 0;  // largest |ours - oracle| over the oracle's top-5 logits of every position
  bool outside_top5 = false;
};

Agreement compare(const Model& model, const nlohmann::json& ref, bool check_tokens) {
  Agreement a;
  const int64_t V = model.config().vocab;
  for (size_t k = 0; k < ref["cases"].size(); ++k) {
    if (!test::runs_case(k)) continue;
    const auto& c = ref["cases"][k];
    const auto ids = c["token_ids"].get<std::vector<int32_t>>();
    if (check_tokens)
      EXPECT_EQ(model.tokenizer->encode(c["text"].get<std::string>(), true, c["parse_special"].get<bool>()), ids)
          << "tokenization of case " << c["name"];
    Session s(*model.decoder, {}, SessionOptions{.n_ctx = 1024});
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

std::unique_ptr<Model> default_model_or_skip() {
  const std::string path = test::default_model();
  return path.empty() ? nullptr : load_model(path);
}

nlohmann::json fixture(const std::string& name) {
  std::ifstream in(test::fixture("smollm2/" + name));
  EXPECT_TRUE(in.good()) << name;
  return nlohmann::json::parse(in);
}

TEST(SmolLM2, Top1MatchesTransformersOnTheSameGguf) {
  auto model = default_model_or_skip();
  if (!model) KS_SKIP_OR_FAIL("default model not cached; run scripts/setup.sh");
  const Agreement a = compare(*model, fixture("top1_transformers.json"), false);
  std::printf("SmolLM2 top-1 vs transformers: %lld / %lld = %.2f%% (worst gap %.3f, max top-5 logit error %.4f)\n",
              static_cast<long long>(a.same), static_cast<long long>(a.positions), 100.0 * a.same / a.positions,
              a.worst_gap, a.max_error);
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
  std::printf("SmolLM2 top-1 vs llama.cpp: %lld / %lld = %.2f%% (worst gap %.3f, max top-5 logit error %.4f)\n",
              static_cast<long long>(a.same), static_cast<long long>(a.positions), 100.0 * a.same / a.positions,
              a.worst_gap, a.max_error);
  EXPECT_FALSE(a.outside_top5);
  // llama.cpp's own distance from exact math on these prompts (top-1 on 410/426 positions; where it
  // differs from transformers, transformers' choice is at most 0.21 below llama.cpp's top logit) bounds
  // how close any exact implementation can get.
  EXPECT_LT(a.worst_gap, 0.3f);
  EXPECT_GE(static_cast<double>(a.same) / a.positions, 0.95);
}

}  // namespace
}  // namespace kestrel
