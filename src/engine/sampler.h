// Token sampling on the host: penalties, then temperature, top-k, top-p and min-p filters, then a draw
// from a seeded generator — so the same seed always gives the same text. temperature == 0 is greedy.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace kestrel {

struct SamplingParams {
  float temperature = 0.f;  // 0: greedy (argmax)
  int top_k = 0;            // 0: off
  float top_p = 1.f;        // 1: off
  float min_p = 0.f;        // 0: off; keep tokens with p >= min_p * p_max
  float repetition_penalty = 1.f;  // >1 discourages tokens seen in the last `penalty_last_n` tokens
  float presence_penalty = 0.f;    // OpenAI: subtract once for any token already generated
  float frequency_penalty = 0.f;   // OpenAI: subtract per occurrence
  int penalty_last_n = 64;         // window for repetition_penalty (-1: whole history)
  uint64_t seed = 0;

  void validate() const;  // throws kestrel::Error for out-of-range values
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p);
  const SamplingParams& params() const { return p_; }

  // Picks the next token from raw logits (modified in place by penalties). `history` holds the tokens
  // the penalties look at (prompt and generated, as the caller decides).
  int32_t sample(std::span<float> logits, std::span<const int32_t> history);

  // The probability distribution after all filters, as (token, prob) sorted by descending prob
  // (for logprobs and tests). Does not advance the generator.
  std::vector<std::pair<int32_t, float>> distribution(std::span<float> logits, std::span<const int32_t> history);

 private:
  void apply_penalties(std::span<float> logits, std::span<const int32_t> history) const;

  SamplingParams p_;
  std::mt19937_64 rng_;
};

int32_t argmax(std::span<const float> logits);

}  // namespace kestrel
