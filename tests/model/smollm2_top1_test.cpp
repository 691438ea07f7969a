// The default model against llama.cpp (tests/fixtures/smollm2/top1.json, made by
// scripts/reference/make_smollm2_top1.py): same token ids for every prompt, and the same top-1 next token
// on at least 99% of all positions (the rest must be near-ties within llama.cpp's top 5).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/sampler.h"
#include "engine/session.h"
#include "model/model.h"
#include "test_paths.h"

namespace kestrel {
namespace {

TEST(SmolLM2, TokensAndTop1MatchLlamaCpp) {
  const std::string path = test::default_model();
  if (path.empty()) GTEST_SKIP() << "default model not cached; run scripts/setup.sh";
  std::ifstream in(test::fixture("smollm2/top1.json"));
  ASSERT_TRUE(in.good());
  const nlohmann::json ref = nlohmann::json::parse(in);
  auto model = load_model(path);
  const int64_t V = model->config().vocab;

  int64_t positions = 0, same = 0;
  for (const auto& c : ref["cases"]) {
    const std::string name = c["name"];
    const auto expect_ids = c["token_ids"].get<std::vector<int32_t>>();
    const auto ids = model->tokenizer->encode(c["text"].get<std::string>(), true, c["parse_special"].get<bool>());
    EXPECT_EQ(ids, expect_ids) << "tokenization of case " << name;

    Session s(*model->decoder, {}, SessionOptions{.n_ctx = 1024});
    Tensor logits = s.feed(expect_ids, /*all_logits=*/true);
    const auto top1 = c["top1"].get<std::vector<int32_t>>();
    for (size_t i = 0; i < top1.size(); ++i) {
      const int32_t ours = argmax(std::span<const float>(logits.ptr<float>() + i * V, V));
      ++positions;
      if (ours == top1[i]) {
        ++same;
        continue;
      }
      // A flip is acceptable only between near-tied candidates.
      const auto ids5 = c["top5_ids"][i].get<std::vector<int32_t>>();
      const auto log5 = c["top5_logits"][i].get<std::vector<float>>();
      const auto it = std::find(ids5.begin(), ids5.end(), ours);
      ASSERT_NE(it, ids5.end()) << name << " position " << i << ": kestrel picks " << ours
                                << ", outside llama.cpp's top 5";
      EXPECT_LT(log5[0] - log5[it - ids5.begin()], 0.15f) << name << " position " << i;
    }
  }
  const double rate = static_cast<double>(same) / positions;
  std::printf("SmolLM2 top-1 agreement with llama.cpp: %lld / %lld = %.2f%%\n", static_cast<long long>(same),
              static_cast<long long>(positions), 100 * rate);
  EXPECT_GE(rate, 0.99);
}

}  // namespace
}  // namespace kestrel
