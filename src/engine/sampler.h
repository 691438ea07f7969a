// Sampling parameters as requests state them, and their translation into the rows of ops::sample (the
// op that picks tokens on whatever device the logits are; its contract in ops/ops.h). Draws are
// counter-based: the uniform of a draw depends only on (seed, draw index), and the engine uses the index
// of the token being generated, so a seeded request gives the same text alone or batched, before or after
// a preemption, on the CPU or the GPU.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "ops/context.h"
#include "ops/ops.h"

namespace kestrel {

struct SamplingParams {
  float temperature = 0.f;         // 0: greedy (argmax)
  int top_k = 0;                   // 0: off
  float top_p = 1.f;               // 1: off
  float min_p = 0.f;               // 0: off; keep tokens with p >= min_p * p_max
  float repetition_penalty = 1.f;  // >1 discourages tokens seen in the last `penalty_last_n` tokens
  float presence_penalty = 0.f;    // OpenAI: subtract once for any token already generated
  float frequency_penalty = 0.f;   // OpenAI: subtract per occurrence
  int penalty_last_n = 64;         // window for repetition_penalty (-1: whole history)
  uint64_t seed = 0;
  std::vector<std::pair<int32_t, float>> logit_bias = {};  // added to these tokens' logits (OpenAI's logit_bias)
  int min_tokens = 0;                        // until this many tokens are generated, `min_tokens_ban` cannot be drawn
  std::vector<int32_t> min_tokens_ban = {};  // the tokens that would end generation early (EOG, stop ids)

  void validate() const;  // throws kestrel::Error for out-of-range values
  // The penalties count the history; adjusts_logits() also covers the biases, which do not.
  bool penalties() const { return repetition_penalty != 1.f || presence_penalty != 0.f || frequency_penalty != 0.f; }
  bool adjusts_logits() const {
    return penalties() || !logit_bias.empty() || (min_tokens > 0 && !min_tokens_ban.empty());
  }
};

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;                           // log-softmax of the raw logits (before penalties and filters)
  std::vector<std::pair<int32_t, float>> top;  // the most likely tokens, most likely first
};

// The uniform in [0, 1) of draw `draw` under `seed` (24 bits, so exactly representable as a float).
float sampling_uniform(uint64_t seed, uint64_t draw);

// The op's row for one sequence: sample with `p` at draw index `draw`; top_logprobs >= 0 also asks for the
// sampled token's logprob and that many alternatives. Penalty entries are set by add_penalties().
ops::SampleRow sample_row(const SamplingParams& p, uint64_t draw, int top_logprobs);
// Appends the penalty entries of `history` (the tokens the penalties count) and of the biases (logit_bias;
// min_tokens_ban while fewer than min_tokens of `generated` tokens exist) to `entries`, one per token, and
// points the row at them. Nothing is added when `p` adjusts no logits.
void add_penalties(const SamplingParams& p, std::span<const int32_t> history, int generated, ops::SampleRow& row,
                   std::vector<ops::PenaltyEntry>& entries);
// The token and, when the row asked for them, the logprobs of one op output row.
TokenLogprob to_logprob(const ops::SampleOut& out);

// One draw on the host through ops::sample (for the CPU path's callers and tests); `logits` is modified by
// the penalties.
int32_t sample_host(const SamplingParams& p, std::span<float> logits, std::span<const int32_t> history, uint64_t draw,
                    TokenLogprob* logprob = nullptr, int top_logprobs = 0);

int32_t argmax(std::span<const float> logits);

}  // namespace kestrel
