// Per-ISA tables of the inner kernels of the fast CPU backend. The same threaded drivers (matmul,
// attention, activations) run on top of whichever table the CPU supports: "generic" (portable C++,
// any CPU), "avx2" (AVX2 + FMA + F16C) and "avx512vnni" (adds AVX-512 VL/BW/VNNI). Each table is a
// separate variant in the dispatcher, so the ops harness checks all of them on a machine that has
// the widest ISA, and a CPU without it falls back to the next one.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace kestrel::backends::cpu {

// The activation formats every quantized weight type is multiplied with: ggml pairs each weight type
// with its own partner (Q8_0, Q8_1, Q8_K), but one format of 32-element blocks serves them all, with
// an f32 scale (no f16 rounding) and the block sums that the offset/min terms of Q4_0/Q4_1/Q4_K
// (whole block) and Q6_K (16-element halves) multiply. x[i] ~= d * qs[i].
struct BlockQ8x32 {
  float d;
  float s;         // d * (sum[0] + sum[1])
  int16_t sum[2];  // sum of qs[0..15], qs[16..31]
  int8_t qs[32];
};
static_assert(sizeof(BlockQ8x32) == 44);

// The higher-precision partner: 16-bit integers, so the rounding step is absmax/32767 instead of
// absmax/127 (256x smaller). Models with activation outliers (SmolLM2) lose top-1 agreement with
// exact f32 math under 8-bit blocks; 16-bit blocks keep it. Weights are widened to int16 as well, so
// Q4_0 and Q6_K fold their offsets (and Q6_K its 16-element scales) into the integers and only the
// Q4_1/Q4_K mins need the block sum.
struct BlockQ16x32 {
  float d;
  float s;  // d * sum(qs)
  int16_t qs[32];
};
static_assert(sizeof(BlockQ16x32) == 72);

// Which activation format a matmul variant quantizes to (float weights always take f32 activations).
enum class ActFormat { Q8, Q16 };

// y[r * y_stride] = dot(w_row, x_r) for r < nx (1 <= nx <= kMaxTileRows), x_r at x + r * x_stride
// bytes. x is f32 [k] for float weights and BlockQ8x32 or BlockQ16x32 [k / 32] for quantized ones
// (see weight_uses_q8 and Kernels::dot). Each weight block is loaded and unpacked once for all nx rows.
using DotTileFn = void (*)(int64_t k, const void* w_row, const void* x, size_t x_stride, int nx, float* y,
                           int64_t y_stride);
constexpr int kMaxTileRows = 4;

// Attention helpers over one cache row of n elements in the cache dtype.
using KvDotFn = float (*)(const float* q, const void* k, int64_t n);       // q . k
using KvAxpyFn = void (*)(float a, const void* v, float* acc, int64_t n);  // acc += a * v

constexpr size_t kNumDTypes = static_cast<size_t>(DType::Count);

struct Kernels {
  const char* name;
  bool (*available)();                                                 // does this CPU run the table
  void (*quantize_q8x32)(const float* x, BlockQ8x32* y, int64_t k);    // k % 32 == 0
  void (*quantize_q16x32)(const float* x, BlockQ16x32* y, int64_t k);  // k % 32 == 0
  // By weight dtype (null: unsupported): dot[Q8] takes BlockQ8x32 activations, dot[Q16] BlockQ16x32;
  // both take f32 activations for float weights.
  std::array<std::array<DotTileFn, kNumDTypes>, 2> dot{};
  std::array<KvDotFn, kNumDTypes> kv_dot{};  // by cache dtype; null: unsupported
  std::array<KvAxpyFn, kNumDTypes> kv_axpy{};
  void (*silu_mul)(const float* gate, const float* up, float* y, int64_t n);
  float (*exp_sum)(float* x, float shift, int64_t n);  // x[i] = exp(x[i] - shift); returns the sum

  const std::array<DotTileFn, kNumDTypes>& dots(ActFormat f) const { return dot[static_cast<size_t>(f)]; }
};

// Float weights multiply f32 activations directly; quantized ones take quantized activations.
inline bool weight_uses_q8(DType t) {
  return dtype_info(t).quantized;
}

const Kernels& generic_kernels();
const Kernels& avx2_kernels();        // available() is false off x86-64
const Kernels& avx512vnni_kernels();  // available() is false off x86-64

}  // namespace kestrel::backends::cpu
