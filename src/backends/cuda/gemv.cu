// Flat GEMM for decode-sized M (1..8 rows of activations): y = x . w^T, memory-bound on w. Tensor cores
// do the arithmetic with the roles swapped (FlashDecoding++): 16 rows of w are the MMA's A operand and
// the <= 8 tokens sit in its N = 8 slot, so nothing is padded to 64 rows. Each lane loads 16-byte
// vectors of w and x straight from global memory into registers; the k order inside a 32-wide chunk is
// permuted identically for w and x (a dot product does not care), which makes a contiguous 16-byte
// vector land exactly in the fragment layout mma.sync expects — no shared-memory staging. A block owns
// 16 or 32 rows of w and its 8 warps split K; partial sums meet in shared memory.
#include "backends/cuda/common.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/mma.cuh"

namespace kestrel::backends::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kUnroll = 4;

// MT m16 tiles of w per block: with 2, each x fragment feeds two MMAs (half the x traffic); with 1,
// narrow matrices get twice the blocks to fill the SMs. The register caps keep the decode shapes in one
// wave: 3 blocks per SM for MT 1 (<= 80 registers), 2 for MT 2 (<= 128).
template <typename Ty, int MT>
__global__ void __launch_bounds__(kWarps * 32, MT == 1 ? 3 : 2)
    gemv_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w, const float* __restrict__ bias,
                Ty* __restrict__ y, int M, int N, int K) {
  __shared__ float partial[kWarps][32][4 * MT];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int n0 = blockIdx.x * 16 * MT;
  const int n_chunks = K / 32;

  // Rows of w this lane feeds (clamped: rows past N load row N-1 and are never stored).
  const bf16* wr[2 * MT];
#pragma unroll
  for (int i = 0; i < 2 * MT; ++i) wr[i] = w + static_cast<size_t>(min(n0 + g + 8 * i, N - 1)) * K + 8 * t;
  const bool has_x = g < M;
  const bf16* xr = x + static_cast<size_t>(has_x ? g : 0) * K + 8 * t;

  // w is no kernel's output, so L2 starts fetching the first iteration's lines before the wait; launched as
  // a programmatic dependent (launch.cuh; M == 1), that overlaps the kernel that writes x. (A register
  // preload instead cost the loop its schedule: +9% GEMM time at batch 1, 64 registers and a spill.)
  if (t == 0) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = warp + u * kWarps;
      if (c < n_chunks)
#pragma unroll
        for (int i = 0; i < 2 * MT; ++i) prefetch_l2(wr[i] + c * 32);
    }
  }
  pdl_wait();
  pdl_launch_dependents();

  float acc[MT][4] = {};
  for (int c0 = warp; c0 < n_chunks; c0 += kWarps * kUnroll) {
    uint4 wv[kUnroll][2 * MT], xv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = c0 + u * kWarps;
      if (c < n_chunks) {
#pragma unroll
        for (int i = 0; i < 2 * MT; ++i) wv[u][i] = __ldg(reinterpret_cast<const uint4*>(wr[i] + c * 32));
        xv[u] = has_x ? __ldg(reinterpret_cast<const uint4*>(xr + c * 32)) : make_uint4(0, 0, 0, 0);
      } else {
#pragma unroll
        for (int i = 0; i < 2 * MT; ++i) wv[u][i] = make_uint4(0, 0, 0, 0);
        xv[u] = make_uint4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const uint4 lo = wv[u][2 * mt], hi = wv[u][2 * mt + 1];  // rows g and g + 8 of this m16 tile
        const uint32_t a0[4] = {lo.x, hi.x, lo.y, hi.y};
        const uint32_t a1[4] = {lo.z, hi.z, lo.w, hi.w};
        mma_bf16_16816(acc[mt], a0, xv[u].x, xv[u].y);
        mma_bf16_16816(acc[mt], a1, xv[u].z, xv[u].w);
      }
    }
  }

#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int e = 0; e < 4; ++e) partial[warp][lane][mt * 4 + e] = acc[mt][e];
  __syncthreads();
  if (warp != 0) return;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      float v = 0.f;
#pragma unroll
      for (int ww = 0; ww < kWarps; ++ww) v += partial[ww][lane][mt * 4 + e];
      // Accumulator element e: w row g (+8 for e >= 2) of tile mt, token 2t + (e & 1).
      const int n = n0 + mt * 16 + g + (e >= 2 ? 8 : 0);
      const int m = 2 * t + (e & 1);
      if (n < N && m < M) y[static_cast<size_t>(m) * N + n] = from_f32<Ty>(v + (bias ? bias[n] : 0.f));
    }
}

template <int MT>
void launch_tiles(const void* x, const void* w, const float* bias, DType y_t, void* y, int M, int N, int K,
                  cudaStream_t s) {
  const unsigned grid = static_cast<unsigned>((N + 16 * MT - 1) / (16 * MT));
  auto xb = static_cast<const bf16*>(x);
  auto wb = static_cast<const bf16*>(w);
  // Programmatic launch only for one token: on the H100 it took llama3-8b batch-1 decode from 164.3 to
  // 166.2-166.9 tok/s, but batch 8 from 1272 to 1214-1227 (per-kernel-kind A/B in one call; the early
  // blocks of the wider GEMV did not pay for themselves).
  const bool dependent = M == 1;
  if (y_t == DType::BF16)
    launch_kernel(dependent, gemv_kernel<bf16, MT>, dim3(grid), dim3(kWarps * 32), 0, s, xb, wb, bias,
                  static_cast<bf16*>(y), M, N, K);
  else
    launch_kernel(dependent, gemv_kernel<float, MT>, dim3(grid), dim3(kWarps * 32), 0, s, xb, wb, bias,
                  static_cast<float*>(y), M, N, K);
}

}  // namespace

void launch_gemv(const void* x, const void* w, const float* bias, DType y_t, void* y, int M, int N, int K, int sms,
                 cudaStream_t s) {
  if (M == 0 || N == 0) return;
  if ((N + 31) / 32 >= 2 * sms)
    launch_tiles<2>(x, w, bias, y_t, y, M, N, K, s);
  else
    launch_tiles<1>(x, w, bias, y_t, y, M, N, K, s);
}

}  // namespace kestrel::backends::cuda
