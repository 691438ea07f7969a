// The one reduction every bf16 matmul kernel of the fixed family (gemv.cu's flat GEMM, gemm_fixed.cu's
// tiled GEMM) performs, so an output element's bits depend only on its row of x, its row of w and K — not
// on M, on the tile it sits in, or on which of the kernels ran. That is what makes the matmul batch
// invariant (--batch-invariant): a request's rows give the same bits alone or inside any batch.
//
// The contract, for y[m, n] = x[m, :] . w[n, :] (+ bias[n]):
// - K is cut into 32-wide chunks; chunk c belongs to range c % kFixedRanges (interleaved: the flat GEMM's
//   8 warps then read neighbouring chunks, which keeps its weight stream sequential in DRAM; contiguous
//   ranges measured 10% slower on the H100 at batch 1).
// - Each range accumulates from +0 in increasing chunk order, two m16n8k16 MMAs per chunk (mma_chunk), with
//   w in the A slot and x in the B slot, lane (g, t) supplying k = 8t .. 8t + 7 of the chunk for its rows.
// - y = (((0 + p0) + p1) + ... + p7) + (bias[n] or 0.f), rounded once to the output type.
// The flat GEMM gives each range to a warp and adds the partials in warp order; the tiled GEMM walks the
// ranges in turn (RangeCursor orders the chunks range by range) with a second set of accumulators.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "backends/cuda/mma.cuh"

namespace kestrel::backends::cuda {

constexpr int kFixedRanges = 8;

// Chunks in range r.
__host__ __device__ __forceinline__ int range_chunks(int r, int chunks) {
  return r < chunks ? (chunks - 1 - r) / kFixedRanges + 1 : 0;
}

// Walks the chunks in range-major order (range 0's chunks 0, 8, 16, ..., then range 1's, ...) one step at
// a time, so a kernel's inner loop pays an increment, not a search. Ranges past the last chunk (K < 256)
// are empty and come last.
struct RangeCursor {
  int chunks, r = 0, j = 0, n;  // at chunk j of range r, which holds n chunks
  __device__ explicit RangeCursor(int chunks_) : chunks(chunks_), n(range_chunks(0, chunks_)) {}
  __device__ int chunk() const { return r + kFixedRanges * j; }
  __device__ void advance() {
    if (++j == n) {
      ++r;
      j = 0;
      n = range_chunks(r, chunks);
    }
  }
};

// One 32-wide chunk into a m16n8 accumulator: lo/hi are the 16-byte vectors (k 8t .. 8t + 7) of w rows g
// and g + 8, xv that of x's token g. The k order inside the chunk is permuted identically for w and x
// (a dot product does not care), which makes a contiguous 16-byte vector land exactly in the fragment
// layout mma.sync expects.
__device__ __forceinline__ void mma_chunk(float (&acc)[4], const uint4& lo, const uint4& hi, const uint4& xv) {
  const uint32_t a0[4] = {lo.x, hi.x, lo.y, hi.y};
  const uint32_t a1[4] = {lo.z, hi.z, lo.w, hi.w};
  mma_bf16_16816(acc, a0, xv.x, xv.y);
  mma_bf16_16816(acc, a1, xv.z, xv.w);
}

}  // namespace kestrel::backends::cuda
