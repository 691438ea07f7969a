// The CPU reference of ops::sample, through sample_host (engine/sampler.h): greedy, seeded draws that
// follow the distribution, the filters, penalties and logprobs. The GPU kernels are held to the same
// contract by tests/ops/cuda_sampling_test.cpp.
#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "core/error.h"

namespace kestrel {
namespace {

std::vector<float> logits() {
  return {1.f, 3.f, 2.f, 0.5f, 2.9f, -1.f};
}

int32_t draw(const SamplingParams& p, uint64_t i, std::span<const int32_t> history = {}) {
  auto l = logits();
  return sample_host(p, l, history, i);
}

std::set<int32_t> support(const SamplingParams& p, int draws = 2000) {
  std::set<int32_t> seen;
  for (int i = 0; i < draws; ++i) seen.insert(draw(p, i));
  return seen;
}

TEST(Sampler, GreedyPicksArgmax) {
  EXPECT_EQ(draw({}, 0), 1);
  EXPECT_EQ(draw({.temperature = 1.f, .top_k = 1}, 7), 1);
}

// logit_bias adds to a token's logit after the penalties; min_tokens forbids its tokens (-inf) until the
// history holds that many generated tokens. Logprobs stay those of the raw logits.
TEST(Sampler, LogitBiasAndMinTokens) {
  EXPECT_EQ(draw({.logit_bias = {{1, -100.f}}}, 0), 4);  // the argmax pushed down: 2.9 is next
  EXPECT_EQ(draw({.logit_bias = {{5, 4.5f}}}, 0), 5);    // -1 + 4.5 beats 3
  EXPECT_EQ(draw({.logit_bias = {{1, -0.1f}, {4, 0.1f}}}, 0), 4);
  const SamplingParams p{.min_tokens = 2, .min_tokens_ban = {1, 4}};
  const std::vector<int32_t> one = {0}, two = {0, 0};
  EXPECT_EQ(draw(p, 0, one), 2);  // 1 and 4 banned with one token generated
  EXPECT_EQ(draw(p, 0, two), 1);  // allowed from the second on
  auto l = logits();
  TokenLogprob lp;
  EXPECT_EQ(sample_host(p, l, one, 0, &lp, 2), 2);
  ASSERT_EQ(lp.top.size(), 2u);
  EXPECT_EQ(lp.top[0].first, 1);  // the raw distribution: the banned argmax still leads
  // Biases alone, without penalties, still go through the entries, once per token.
  ops::SampleRow row;
  std::vector<ops::PenaltyEntry> entries;
  add_penalties({.repetition_penalty = 1.2f, .logit_bias = {{3, 1.f}}}, one, 1, row, entries);
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].token, 0);
  EXPECT_EQ(entries[1].token, 3);
  EXPECT_EQ(entries[1].bias, 1.f);
}

TEST(Sampler, SameSeedAndDrawSameToken) {
  const SamplingParams p{.temperature = 1.f, .seed = 42};
  for (uint64_t i = 0; i < 50; ++i) EXPECT_EQ(draw(p, i), draw(p, i));
  // A different seed gives different draws somewhere.
  int differ = 0;
  for (uint64_t i = 0; i < 50; ++i) differ += draw(p, i) != draw({.temperature = 1.f, .seed = 43}, i);
  EXPECT_GT(differ, 0);
}

TEST(Sampler, UniformsAreUniform) {
  // Chi-square of 1e5 draws over 100 equal bins (99 degrees of freedom; 148.2 is the 0.999 quantile): a
  // mean-and-variance check would pass a generator that piles draws into a few values.
  const int n = 100000, bins = 100;
  std::vector<int> count(bins);
  for (int i = 0; i < n; ++i) {
    const double u = sampling_uniform(7, i);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    ++count[static_cast<int>(u * bins)];
  }
  double chi2 = 0;
  for (int c : count) chi2 += (c - n / bins) * (c - n / bins) / (n / static_cast<double>(bins));
  EXPECT_LT(chi2, 148.2);
}

// The token draw i must pick, from the definitions alone (long double): the tokens kept by the filters, each
// with mass exp((l - l_max) / T), and the first token in vocabulary order whose cumulative mass exceeds
// u * total. Returns -1 when u * total lies within `slack` of a boundary, where f32 rounding in the sampler
// may legitimately pick either neighbour.
int32_t inverse_cdf(const SamplingParams& p, float u, long double slack) {
  const auto l = logits();
  const long double lmax = *std::max_element(l.begin(), l.end());
  std::vector<long double> mass(l.size());
  for (size_t t = 0; t < l.size(); ++t) mass[t] = std::exp((l[t] - lmax) / p.temperature);
  std::vector<long double> sorted = mass;
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  long double floor = 0;  // tokens with mass >= floor are kept (ties at a threshold all stay)
  if (p.top_k > 0) floor = sorted[p.top_k - 1];
  if (p.top_p < 1.f) {
    long double total = 0, cum = 0;
    for (long double m : sorted) total += m >= floor ? m : 0;
    for (long double m : sorted)
      if (m >= floor && (cum += m) >= p.top_p * total) {
        floor = m;
        break;
      }
  }
  floor = std::max(floor, static_cast<long double>(p.min_p));  // p >= min_p * p_max, p_max's mass being 1
  long double total = 0;
  for (long double m : mass) total += m >= floor ? m : 0;
  const long double target = u * total;
  long double cum = 0;
  for (size_t t = 0; t < l.size(); ++t) {
    if (mass[t] < floor) continue;
    cum += mass[t];
    if (std::fabs(target - cum) < slack * total) return -1;
    if (target < cum) return static_cast<int32_t>(t);
  }
  return -1;
}

TEST(Sampler, DrawsFollowTheInverseCdfExactly) {
  // Every draw is compared with the exact inverse CDF, so a probability off by d changes the pick on a
  // fraction d of the draws: with 20000 draws per setting an error of ~1e-4 fails. (The chi-square below
  // alone lets errors of ~0.01 between the two likeliest tokens pass: 20000 * 0.01^2 * (1/0.40 + 1/0.36)
  // is ~11 against its threshold of 20.5.) Near-boundary draws are exempt: f32 exp() and sums are accurate
  // to a few 1e-7, so a slack of 1e-5 of the total mass exempts ~1e-5 of the draws per boundary.
  const std::vector<SamplingParams> settings = {
      {.temperature = 1.f},
      {.temperature = 0.7f},
      {.temperature = 1.6f},
      {.temperature = 1.f, .top_k = 3},
      {.temperature = 0.8f, .top_p = 0.8f},
      {.temperature = 1.3f, .min_p = 0.2f},
      {.temperature = 1.f, .top_k = 4, .top_p = 0.9f, .min_p = 0.05f},
  };
  for (const SamplingParams& p : settings) {
    SCOPED_TRACE(::testing::Message() << "T " << p.temperature << " top_k " << p.top_k << " top_p " << p.top_p
                                      << " min_p " << p.min_p);
    int exempt = 0;
    for (uint64_t i = 0; i < 20000; ++i) {
      const int32_t want = inverse_cdf(p, sampling_uniform(p.seed, i), 1e-5L);
      if (want < 0) {
        ++exempt;
        continue;
      }
      ASSERT_EQ(draw(p, i), want) << "draw " << i << " (u = " << sampling_uniform(p.seed, i) << ")";
    }
    EXPECT_LE(exempt, 10);
  }
}

TEST(Sampler, DrawsFollowTheDistribution) {
  // Chi-square against softmax(logits) over 6 tokens (5 degrees of freedom; 20.5 is the 0.999 quantile):
  // the distribution end to end, uniforms included. Coarse (see DrawsFollowTheInverseCdfExactly).
  const auto l = logits();
  double z = 0;
  for (float x : l) z += std::exp(x);
  std::map<int, int> counts;
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++counts[draw({.temperature = 1.f, .seed = 1}, i)];
  double chi2 = 0;
  for (size_t t = 0; t < l.size(); ++t) {
    const double expect = n * std::exp(l[t]) / z;
    chi2 += (counts[static_cast<int>(t)] - expect) * (counts[static_cast<int>(t)] - expect) / expect;
  }
  EXPECT_LT(chi2, 20.5);
}

TEST(Sampler, FiltersKeepTheRightTokens) {
  EXPECT_EQ(support({.temperature = 1.f, .top_k = 2}), (std::set<int32_t>{1, 4}));
  EXPECT_EQ(support({.temperature = 1.f, .top_p = 0.5f}), (std::set<int32_t>{1, 4}));  // 0.39 + 0.35 >= 0.5
  // p >= 0.5 p_max: tokens 1 and 4 (e^-0.1); token 2 is at e^-1.
  EXPECT_EQ(support({.temperature = 1.f, .min_p = 0.5f}), (std::set<int32_t>{1, 4}));
  EXPECT_EQ(support({.temperature = 1.f, .top_k = 3, .top_p = 0.99f}), (std::set<int32_t>{1, 2, 4}));
}

TEST(Sampler, PenaltiesChangeTheChoice) {
  std::vector<int32_t> history = {1};
  EXPECT_EQ(draw({.repetition_penalty = 1.5f}, 0, history), 4);  // 3/1.5 = 2 < 2.9
  EXPECT_EQ(draw({.presence_penalty = 0.5f}, 0, history), 4);
  EXPECT_EQ(draw({.frequency_penalty = 0.05f}, 0, history), 1);  // 2.95 > 2.9
  // The repetition window: token 1 is outside the last 1 token.
  std::vector<int32_t> longer = {1, 3};
  EXPECT_EQ(draw({.repetition_penalty = 1.5f, .penalty_last_n = 1}, 0, longer), 1);
}

TEST(Sampler, LogprobsAreOfTheRawDistribution) {
  auto l = logits();
  double z = 0;
  for (float x : l) z += std::exp(x);
  TokenLogprob lp;
  std::vector<int32_t> history = {1};
  // The penalty moves the pick to token 4, but the logprobs stay those of the raw logits.
  const int32_t t = sample_host({.repetition_penalty = 1.5f}, l, history, 0, &lp, 3);
  EXPECT_EQ(t, 4);
  EXPECT_EQ(lp.token, 4);
  EXPECT_NEAR(lp.logprob, 2.9 - std::log(z), 1e-5);
  ASSERT_EQ(lp.top.size(), 3u);
  EXPECT_EQ(lp.top[0].first, 1);
  EXPECT_NEAR(lp.top[0].second, 3.0 - std::log(z), 1e-5);
  EXPECT_EQ(lp.top[1].first, 4);
  EXPECT_EQ(lp.top[2].first, 2);
}

TEST(Sampler, RejectsBadParameters) {
  EXPECT_THROW(draw({.temperature = -1.f}, 0), Error);
  EXPECT_THROW(draw({.top_p = 0.f}, 0), Error);
  EXPECT_THROW(draw({.min_p = 2.f}, 0), Error);
  EXPECT_THROW(draw({.top_k = -3}, 0), Error);
  std::vector<int32_t> bad = {99};
  EXPECT_THROW(draw({.repetition_penalty = 1.5f}, 0, bad), Error);
}

}  // namespace
}  // namespace kestrel
