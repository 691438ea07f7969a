#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

#include "core/error.h"

namespace kestrel {

void SamplingParams::validate() const {
  KS_CHECK(std::isfinite(temperature) && temperature >= 0 && temperature <= 100, "temperature must be in [0, 100], got {}",
           temperature);
  KS_CHECK(top_k >= 0, "top_k must be >= 0, got {}", top_k);
  KS_CHECK(top_p > 0 && top_p <= 1, "top_p must be in (0, 1], got {}", top_p);
  KS_CHECK(min_p >= 0 && min_p <= 1, "min_p must be in [0, 1], got {}", min_p);
  KS_CHECK(repetition_penalty > 0 && repetition_penalty <= 100, "repetition penalty must be in (0, 100], got {}",
           repetition_penalty);
  KS_CHECK(std::fabs(presence_penalty) <= 2 && std::fabs(frequency_penalty) <= 2,
           "presence and frequency penalties must be in [-2, 2]");
  KS_CHECK(penalty_last_n >= -1, "penalty window must be >= -1");
}

Sampler::Sampler(const SamplingParams& p) : p_(p), rng_(p.seed) { p_.validate(); }

int32_t argmax(std::span<const float> logits) {
  KS_CHECK(!logits.empty(), "argmax of empty logits");
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

void Sampler::apply_penalties(std::span<float> logits, std::span<const int32_t> history) const {
  const int64_t vocab = static_cast<int64_t>(logits.size());
  if (p_.repetition_penalty != 1.f) {
    // Same rule as llama.cpp and HF: shrink positive logits, push negative ones further down; each
    // distinct token in the window once.
    const size_t n = p_.penalty_last_n < 0 ? history.size() : std::min<size_t>(history.size(), p_.penalty_last_n);
    std::vector<bool> seen(vocab, false);
    for (int32_t t : history.last(n)) {
      if (t < 0 || t >= vocab || seen[t]) continue;
      seen[t] = true;
      logits[t] = logits[t] > 0 ? logits[t] / p_.repetition_penalty : logits[t] * p_.repetition_penalty;
    }
  }
  if (p_.presence_penalty != 0.f || p_.frequency_penalty != 0.f) {
    std::unordered_map<int32_t, int> counts;
    for (int32_t t : history)
      if (t >= 0 && t < vocab) ++counts[t];
    for (auto [t, c] : counts) logits[t] -= p_.presence_penalty + p_.frequency_penalty * static_cast<float>(c);
  }
}

std::vector<std::pair<int32_t, float>> Sampler::distribution(std::span<float> logits,
                                                             std::span<const int32_t> history) {
  apply_penalties(logits, history);
  std::vector<std::pair<int32_t, float>> cand;
  if (p_.temperature == 0.f) {
    cand.emplace_back(argmax(logits), 1.f);
    return cand;
  }
  cand.reserve(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) cand.emplace_back(static_cast<int32_t>(i), logits[i] / p_.temperature);
  auto by_logit = [](const auto& a, const auto& b) { return a.second > b.second || (a.second == b.second && a.first < b.first); };
  if (p_.top_k > 0 && static_cast<size_t>(p_.top_k) < cand.size()) {
    std::partial_sort(cand.begin(), cand.begin() + p_.top_k, cand.end(), by_logit);
    cand.resize(p_.top_k);
  } else {
    std::sort(cand.begin(), cand.end(), by_logit);
  }
  // Softmax over the survivors (sorted, so cand[0] holds the max).
  const float mx = cand[0].second;
  double sum = 0;
  for (auto& c : cand) sum += (c.second = std::exp(c.second - mx));
  for (auto& c : cand) c.second = static_cast<float>(c.second / sum);
  if (p_.top_p < 1.f) {
    double cum = 0;
    size_t keep = 0;
    while (keep < cand.size()) {
      cum += cand[keep++].second;
      if (cum >= p_.top_p) break;
    }
    cand.resize(std::max<size_t>(keep, 1));
  }
  if (p_.min_p > 0.f) {
    const float floor = p_.min_p * cand[0].second;
    size_t keep = 1;
    while (keep < cand.size() && cand[keep].second >= floor) ++keep;
    cand.resize(keep);
  }
  double total = 0;
  for (const auto& c : cand) total += c.second;
  for (auto& c : cand) c.second = static_cast<float>(c.second / total);
  return cand;
}

int32_t Sampler::sample(std::span<float> logits, std::span<const int32_t> history) {
  auto cand = distribution(logits, history);
  if (cand.size() == 1) return cand[0].first;
  // Draw with the generator's raw bits so results don't depend on the standard library's distributions.
  const double r = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
  double cum = 0;
  for (const auto& c : cand) {
    cum += c.second;
    if (r < cum) return c.first;
  }
  return cand.back().first;
}

}  // namespace kestrel
