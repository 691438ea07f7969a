// Round-to-nearest quantizers of the K-quant weight types (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K), for `kestrel quantize`. Our
// own rules: per sub-block a scale and offset fitted to the weights (Q2_K/Q4_K/Q5_K: from the range, refined by least
// squares on the rounded levels) or the largest magnitude (Q3_K/Q6_K); the scales themselves are then rounded to 6 or 8
// bits against the super-block's f16 scale, and every weight is rounded with the rounded scales it will be decoded
// with. The blocks decode with the shared decoders (quant_groups.h).
#pragma once

#include <cstdint>

#include "core/quant_blocks.h"

namespace kestrel::quant {

void quantize_q2_k(const float* x, BlockQ2_K* b, int64_t nb);
void quantize_q3_k(const float* x, BlockQ3_K* b, int64_t nb);
void quantize_q4_k(const float* x, BlockQ4_K* b, int64_t nb);
void quantize_q5_k(const float* x, BlockQ5_K* b, int64_t nb);
void quantize_q6_k(const float* x, BlockQ6_K* b, int64_t nb);

}  // namespace kestrel::quant
