// Where the flat GEMM's weights come from (gemv.cu): a lane takes k = 8t .. 8t + 7 of chunk c (32 wide)
// of a weight row as 8 bf16 in one 16-byte vector (fixed_reduction.cuh's fragment layout). Bf16Rows loads
// them; QuantRows<Block> decodes them from a GGUF block type with the shared decoders (core/quant_groups.h)
// and rounds each to bf16 — the same bits dequant.cu writes, so a quantized matmul is the bf16 matmul of
// the dequantized matrix whichever kernel runs it (which keeps --batch-invariant exact with quantized
// weights too).
#pragma once

#include <cuda_bf16.h>

#include <cstddef>
#include <cstdint>

#include "backends/cuda/common.cuh"
#include "core/quant_groups.h"

namespace kestrel::backends::cuda {

// Eight decoded weights as the bf16 vector the MMA fragments take.
__device__ __forceinline__ uint4 pack_bf16x8(const float (&f)[8]) {
  uint4 r;
  uint32_t* u = &r.x;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    u[i] = *reinterpret_cast<const uint32_t*>(&h);
  }
  return r;
}

struct Bf16Rows {
  using Row = const bf16*;
  __device__ static Row row(const void* w, int n, int K) {
    return static_cast<const bf16*>(w) + static_cast<size_t>(n) * K;
  }
  __device__ static uint4 load(Row r, int c, int t) {
    return __ldg(reinterpret_cast<const uint4*>(r + 32 * c + 8 * t));
  }
  __device__ static const void* address(Row r, int c) { return r + 32 * c; }
};

template <class Block>
struct QuantRows {
  using Row = const Block*;
  __device__ static Row row(const void* w, int n, int K) {
    return static_cast<const Block*>(w) + static_cast<size_t>(n) * (K / quant::kBlockElems<Block>);
  }
  __device__ static uint4 load(Row r, int c, int t) {
    float f[quant::kGroup];
    quant::decode_group(r, 4 * c + t, f);
    return pack_bf16x8(f);
  }
  __device__ static const void* address(Row r, int c) { return r + 32 * c / quant::kBlockElems<Block>; }
};

}  // namespace kestrel::backends::cuda
