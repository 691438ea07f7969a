#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "core/error.h"

namespace kestrel {

void SamplingParams::validate() const {
  KS_CHECK(std::isfinite(temperature) && temperature >= 0 && temperature <= 100,
           "temperature must be in [0, 100], got {}", temperature);
  KS_CHECK(top_k >= 0, "top_k must be >= 0, got {}", top_k);
  KS_CHECK(top_p > 0 && top_p <= 1, "top_p must be in (0, 1], got {}", top_p);
  KS_CHECK(min_p >= 0 && min_p <= 1, "min_p must be in [0, 1], got {}", min_p);
  KS_CHECK(repetition_penalty > 0 && repetition_penalty <= 100, "repetition penalty must be in (0, 100], got {}",
           repetition_penalty);
  KS_CHECK(std::fabs(presence_penalty) <= 2 && std::fabs(frequency_penalty) <= 2,
           "presence and frequency penalties must be in [-2, 2]");
  KS_CHECK(penalty_last_n >= -1, "penalty window must be >= -1");
  KS_CHECK(min_tokens >= 0, "min_tokens must be >= 0, got {}", min_tokens);
  for (const auto& [t, b] : logit_bias)
    KS_CHECK(std::isfinite(b) && std::fabs(b) <= 100, "logit_bias values must be in [-100, 100], got {}", b);
}

float sampling_uniform(uint64_t seed, uint64_t draw) {
  // splitmix64 over (seed, draw): a full-avalanche mix, so neighbouring draws are unrelated.
  uint64_t z = seed * 0x9e3779b97f4a7c15ull + draw + 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * 0x1.0p-24f;
}

ops::SampleRow sample_row(const SamplingParams& p, uint64_t draw, int top_logprobs) {
  ops::SampleRow r;
  r.flags = ops::kSampleRow | (top_logprobs >= 0 ? ops::kSampleLogprobs : 0);
  r.temperature = p.temperature;
  r.top_k = p.top_k;
  r.top_p = p.top_p;
  r.min_p = p.min_p;
  r.uniform = sampling_uniform(p.seed, draw);
  r.repetition_penalty = p.repetition_penalty;
  r.presence_penalty = p.presence_penalty;
  r.frequency_penalty = p.frequency_penalty;
  r.top_logprobs = std::clamp(top_logprobs, 0, ops::kMaxTopLogprobs);
  return r;
}

void add_penalties(const SamplingParams& p, std::span<const int32_t> history, int generated, ops::SampleRow& row,
                   std::vector<ops::PenaltyEntry>& entries) {
  row.penalty_begin = row.penalty_end = static_cast<int32_t>(entries.size());
  if (!p.adjusts_logits()) return;
  // Same rules as llama.cpp and HF: the repetition penalty once per distinct token of the window; presence
  // and frequency over the whole history.
  std::map<int32_t, ops::PenaltyEntry> by_token;
  if (p.repetition_penalty != 1.f) {
    const size_t n = p.penalty_last_n < 0 ? history.size() : std::min<size_t>(history.size(), p.penalty_last_n);
    for (int32_t t : history.last(n)) by_token[t].window = 1;
  }
  if (p.presence_penalty != 0.f || p.frequency_penalty != 0.f)
    for (int32_t t : history) ++by_token[t].count;
  for (const auto& [t, b] : p.logit_bias) by_token[t].bias += b;
  if (generated < p.min_tokens)
    for (int32_t t : p.min_tokens_ban) by_token[t].bias = -INFINITY;
  for (auto& [t, e] : by_token) {
    if (t < 0) continue;
    e.token = t;
    entries.push_back(e);
  }
  row.penalty_end = static_cast<int32_t>(entries.size());
}

TokenLogprob to_logprob(const ops::SampleOut& out) {
  TokenLogprob lp{out.token, out.logprob, {}};
  for (int i = 0; i < std::clamp(out.n_top, 0, ops::kMaxTopLogprobs); ++i)
    lp.top.emplace_back(out.top_token[i], out.top_logprob[i]);
  return lp;
}

int32_t sample_host(const SamplingParams& p, std::span<float> logits, std::span<const int32_t> history, uint64_t draw,
                    TokenLogprob* logprob, int top_logprobs) {
  p.validate();
  const auto V = static_cast<int64_t>(logits.size());
  KS_CHECK(V > 0, "sampling from empty logits");
  for (int32_t t : history) KS_CHECK(t >= 0 && t < V, "history token {} is outside the vocabulary ({})", t, V);
  for (const auto& [t, b] : p.logit_bias) KS_CHECK(t >= 0 && t < V, "logit_bias token {} is outside the vocabulary", t);
  for (int32_t t : p.min_tokens_ban) KS_CHECK(t >= 0 && t < V, "min_tokens token {} is outside the vocabulary", t);
  ops::SampleRow row = sample_row(p, draw, logprob ? top_logprobs : -1);
  std::vector<ops::PenaltyEntry> entries;
  add_penalties(p, history, static_cast<int>(history.size()), row, entries);
  Tensor lt;
  lt.dtype = DType::F32;
  lt.shape = {1, V};
  lt.data = logits.data();
  Tensor rows = Tensor::empty_host(DType::I32, {1, static_cast<int64_t>(sizeof row / 4)});
  *static_cast<ops::SampleRow*>(rows.data) = row;
  Tensor pen;
  if (!entries.empty()) {
    pen =
        Tensor::empty_host(DType::I32, {static_cast<int64_t>(entries.size()), int64_t{sizeof(ops::PenaltyEntry) / 4}});
    std::copy(entries.begin(), entries.end(), static_cast<ops::PenaltyEntry*>(pen.data));
  }
  Tensor out = Tensor::empty_host(DType::I32, {1, static_cast<int64_t>(sizeof(ops::SampleOut) / 4)});
  ops::sample(ops::Context{}, lt, rows, pen, out);
  const auto& o = *static_cast<const ops::SampleOut*>(out.data);
  if (logprob) *logprob = to_logprob(o);
  return o.token;
}

int32_t argmax(std::span<const float> logits) {
  KS_CHECK(!logits.empty(), "argmax of empty logits");
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

}  // namespace kestrel
