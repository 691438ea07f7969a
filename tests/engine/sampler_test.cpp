#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <map>

#include "core/error.h"

namespace kestrel {
namespace {

std::vector<float> logits() { return {1.f, 3.f, 2.f, 0.5f, 2.9f, -1.f}; }

TEST(Sampler, GreedyPicksArgmax) {
  Sampler s({});
  auto l = logits();
  EXPECT_EQ(s.sample(l, {}), 1);
}

TEST(Sampler, SameSeedSameDraws) {
  SamplingParams p{.temperature = 1.f, .seed = 42};
  Sampler a(p), b(p);
  for (int i = 0; i < 50; ++i) {
    auto la = logits(), lb = logits();
    EXPECT_EQ(a.sample(la, {}), b.sample(lb, {}));
  }
}

TEST(Sampler, DrawsFollowTheDistribution) {
  Sampler s({.temperature = 1.f, .seed = 1});
  std::map<int, int> counts;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    auto l = logits();
    ++counts[s.sample(l, {})];
  }
  // p(1) = e^3 / sum(e^l) ~= 0.39, p(4) ~= 0.35
  EXPECT_NEAR(counts[1] / double(n), 0.392, 0.02);
  EXPECT_NEAR(counts[4] / double(n), 0.355, 0.02);
}

TEST(Sampler, FiltersKeepTheRightTokens) {
  auto l = logits();
  EXPECT_EQ(Sampler({.temperature = 1.f, .top_k = 2}).distribution(l, {}).size(), 2u);
  l = logits();
  auto d = Sampler({.temperature = 1.f, .top_p = 0.5f}).distribution(l, {});
  ASSERT_EQ(d.size(), 2u);  // 0.39 + 0.35 >= 0.5
  EXPECT_EQ(d[0].first, 1);
  EXPECT_EQ(d[1].first, 4);
  l = logits();
  d = Sampler({.temperature = 1.f, .min_p = 0.5f}).distribution(l, {});
  ASSERT_EQ(d.size(), 2u);  // p >= 0.5 p_max: tokens 1 and 4 (e^-0.1); token 2 is at e^-1
  float sum = 0;
  for (auto& [t, p] : d) sum += p;
  EXPECT_NEAR(sum, 1.f, 1e-5);
}

TEST(Sampler, PenaltiesChangeTheChoice) {
  std::vector<int32_t> history = {1};
  auto l = logits();
  EXPECT_EQ(Sampler({.repetition_penalty = 1.5f}).sample(l, history), 4);  // 3/1.5 = 2 < 2.9
  l = logits();
  EXPECT_EQ(Sampler({.presence_penalty = 0.5f}).sample(l, history), 4);
  l = logits();
  EXPECT_EQ(Sampler({.frequency_penalty = 0.05f}).sample(l, history), 1);  // 2.95 > 2.9
}

TEST(Sampler, RejectsBadParameters) {
  EXPECT_THROW(Sampler({.temperature = -1.f}), Error);
  EXPECT_THROW(Sampler({.top_p = 0.f}), Error);
  EXPECT_THROW(Sampler({.min_p = 2.f}), Error);
  EXPECT_THROW(Sampler({.top_k = -3}), Error);
}

}  // namespace
}  // namespace kestrel
