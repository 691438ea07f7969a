// Flat GEMM for decode-sized M (1..64 rows of activations): y = x . w^T, memory-bound on w. Tensor cores
// do the arithmetic with the roles swapped (FlashDecoding++): 16 rows of w are the MMA's A operand and
// the tokens sit in its N = 8 slot (NT slots of 8 for up to 64 tokens), so nothing is padded to 64 rows.
// Each lane loads 16-byte vectors of w and x straight from global memory into registers in the fragment
// layout of fixed_reduction.cuh — no shared-memory staging. A block owns 16 or 32 rows of w; warp w of its
// 8 takes the 32-wide chunks c with c % 8 == w (fixed_reduction's range w) and the partial sums meet in
// shared memory in warp order, which gemm_fixed.cu's tiled kernel reproduces bit for bit.
#include <stdexcept>

#include "backends/cuda/common.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/fixed_reduction.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/weight_rows.cuh"

namespace kestrel::backends::cuda {
namespace {

constexpr int kWarps = kFixedRanges;  // one K range per warp

// MT m16 tiles of w per block: with 2, each x fragment feeds two MMAs (half the x traffic); with 1,
// narrow matrices get twice the blocks to fill the SMs. NT n8 tiles of tokens. U chunks loaded per
// iteration (loads in flight). The register caps keep the decode shapes in one wave: 3 blocks per SM
// for MT 1 and one token tile (<= 80 registers), 2 otherwise (<= 128).
template <class Rows, typename Ty, int MT, int NT, int U>
__global__ void __launch_bounds__(kWarps * 32, MT == 1 && NT == 1 ? 3 : 2)
    gemv_kernel(const bf16* __restrict__ x, const void* __restrict__ w, const float* __restrict__ bias,
                Ty* __restrict__ y, int M, int N, int K) {
  constexpr int E = 4 * MT * NT;  // accumulators per lane
  __shared__ float partial[kWarps][E][32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int n0 = blockIdx.x * 16 * MT;
  const int chunks = K / 32;

  // Rows of w this lane feeds (clamped: rows past N load row N-1 and are never stored).
  typename Rows::Row wr[2 * MT];
#pragma unroll
  for (int i = 0; i < 2 * MT; ++i) wr[i] = Rows::row(w, min(n0 + g + 8 * i, N - 1), K);
  const bf16* xr[NT];
  bool has_x[NT];
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    has_x[j] = 8 * j + g < M;
    xr[j] = x + static_cast<size_t>(has_x[j] ? 8 * j + g : 0) * K + 8 * t;
  }

  // w is no kernel's output, so L2 starts fetching the first iteration's lines before the wait; launched as
  // a programmatic dependent (launch.cuh; M == 1), that overlaps the kernel that writes x. (A register
  // preload instead cost the loop its schedule: +9% GEMM time at batch 1, 64 registers and a spill.)
  if (t == 0) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = warp + u * kWarps;
      if (c < chunks)
#pragma unroll
        for (int i = 0; i < 2 * MT; ++i) prefetch_l2(Rows::address(wr[i], c));
    }
  }
  pdl_wait();
  pdl_launch_dependents();

  float acc[MT][NT][4] = {};
  for (int c0 = warp; c0 < chunks; c0 += kWarps * U) {
    uint4 wv[U][2 * MT], xv[U][NT];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = min(c0 + u * kWarps, chunks - 1);  // past the end: reloads the last chunk, never used
#pragma unroll
      for (int i = 0; i < 2 * MT; ++i) wv[u][i] = Rows::load(wr[i], c, t);
#pragma unroll
      for (int j = 0; j < NT; ++j)
        xv[u][j] = has_x[j] ? __ldg(reinterpret_cast<const uint4*>(xr[j] + c * 32)) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (c0 + u * kWarps >= chunks) break;  // no MMA on padding: the sums must match the tiled kernel's
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int j = 0; j < NT; ++j) mma_chunk(acc[mt][j], wv[u][2 * mt], wv[u][2 * mt + 1], xv[u][j]);
    }
  }

#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) partial[warp][(mt * NT + j) * 4 + e][lane] = acc[mt][j][e];
  __syncthreads();
  // Every thread folds some (lane, accumulator) pairs over the warps, in warp order.
  for (int i = threadIdx.x; i < E * 32; i += kWarps * 32) {
    const int l = i % 32, a = i / 32;
    const int mt = a / (4 * NT), j = a / 4 % NT, e = a % 4;
    float v = 0.f;
#pragma unroll
    for (int ww = 0; ww < kWarps; ++ww) v += partial[ww][a][l];
    // Accumulator element e of lane l: w row l/4 (+8 for e >= 2) of tile mt, token 8j + 2(l%4) + (e & 1).
    const int n = n0 + mt * 16 + l / 4 + (e >= 2 ? 8 : 0);
    const int m = 8 * j + 2 * (l % 4) + (e & 1);
    if (n < N && m < M) y[static_cast<size_t>(m) * N + n] = from_f32<Ty>(v + (bias ? bias[n] : 0.f));
  }
}

template <class Rows, int MT, int NT, int U>
void launch_tiles(const void* x, const void* w, const float* bias, DType y_t, void* y, int M, int N, int K,
                  cudaStream_t s) {
  const unsigned grid = static_cast<unsigned>((N + 16 * MT - 1) / (16 * MT));
  auto xb = static_cast<const bf16*>(x);
  // Programmatic launch only for one token: on the H100 it took llama3-8b batch-1 decode from 164.3 to
  // 166.2-166.9 tok/s, but batch 8 from 1272 to 1214-1227 (per-kernel-kind A/B in one call; the early
  // blocks of the wider GEMV did not pay for themselves).
  const bool dependent = M == 1;
  if (y_t == DType::BF16)
    launch_kernel(dependent, gemv_kernel<Rows, bf16, MT, NT, U>, dim3(grid), dim3(kWarps * 32), 0, s, xb, w, bias,
                  static_cast<bf16*>(y), M, N, K);
  else
    launch_kernel(dependent, gemv_kernel<Rows, float, MT, NT, U>, dim3(grid), dim3(kWarps * 32), 0, s, xb, w, bias,
                  static_cast<float*>(y), M, N, K);
}

template <class Rows>
void launch_flat(const void* x, const void* w, const float* bias, DType y_t, void* y, int M, int N, int K, int sms,
                 cudaStream_t s) {
  const bool wide = (N + 31) / 32 >= 2 * sms;
  if (M <= 8)
    wide ? launch_tiles<Rows, 2, 1, 4>(x, w, bias, y_t, y, M, N, K, s)
         : launch_tiles<Rows, 1, 1, 4>(x, w, bias, y_t, y, M, N, K, s);
  else if (M <= 16)
    wide ? launch_tiles<Rows, 2, 2, 2>(x, w, bias, y_t, y, M, N, K, s)
         : launch_tiles<Rows, 1, 2, 4>(x, w, bias, y_t, y, M, N, K, s);
  else if (M <= 32)
    launch_tiles<Rows, 1, 4, 2>(x, w, bias, y_t, y, M, N, K, s);
  else
    launch_tiles<Rows, 1, 8, 1>(x, w, bias, y_t, y, M, N, K, s);
}

}  // namespace

void launch_gemv(const void* x, DType w_t, const void* w, const float* bias, DType y_t, void* y, int M, int N, int K,
                 int sms, cudaStream_t s) {
  if (M == 0 || N == 0) return;
  if (w_t == DType::BF16) return launch_flat<Bf16Rows>(x, w, bias, y_t, y, M, N, K, sms, s);
  const bool known = quant::visit_weight_block(
      w_t, [&]<class Block>(const Block*) { launch_flat<QuantRows<Block>>(x, w, bias, y_t, y, M, N, K, sms, s); });
  if (!known) throw std::invalid_argument("launch_gemv: no flat GEMM for this weight type");
}

}  // namespace kestrel::backends::cuda
