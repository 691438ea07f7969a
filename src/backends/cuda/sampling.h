// GPU token selection for the decode loop: logits stay on the device, only the chosen ids come back.
// The CPU sampler in src/engine/ remains the reference for the semantics.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace kestrel::backends::cuda {

struct SamplingParams {
  float temperature = 1.f;  // <= 0: greedy (argmax, lowest id on ties)
  int top_k = 0;            // <= 0: off; 1 is greedy
  float top_p = 1.f;        // >= 1: off; keeps the smallest set of most likely tokens with mass >= top_p
  float min_p = 0.f;        // <= 0: off; keeps tokens with p >= min_p * p_max
  uint64_t seed = 0;        // the row's draw; pass a fresh value per step (e.g. request seed + step)
};

// The uniform draw in [0, 1) used for `seed` (exposed so tests and the CPU sampler can reproduce it).
float sampling_uniform(uint64_t seed);

// logits: device tensor [B, V] (f32 or bf16); params: one per row. Returns B ids. `stream` is a
// cudaStream_t (null: the default stream); the call synchronises it to return the ids.
std::vector<int32_t> sample(const Tensor& logits, const std::vector<SamplingParams>& params, void* stream = nullptr);

// Greedy selection for every row.
std::vector<int32_t> argmax(const Tensor& logits, void* stream = nullptr);

}  // namespace kestrel::backends::cuda
