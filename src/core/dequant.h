// Reference conversions between any DType row and f32. These are the oracle for every quantized kernel.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace kestrel {

// Converts n elements (a multiple of the block size) of type t at src to f32.
void dequantize_row(DType t, const void* src, float* dst, int64_t n);

// Converts n f32 values to type t. Supports F32, F16, BF16, Q8_0, Q8_1, Q8_K, Q4_0, Q4_1, Q5_0, Q5_1
// (round-to-nearest like ggml's reference quantizers), Q2_K..Q6_K (round-to-nearest, our rules:
// quantize_k.h) and F8E4M3 (saturating); others throw. The KV code types U8 and U4 dequantize to their code
// values (a page's scales are applied by kv_codec.h).
void quantize_row(DType t, const float* src, void* dst, int64_t n);

}  // namespace kestrel
