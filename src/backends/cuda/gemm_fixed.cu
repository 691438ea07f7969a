// The batch-invariant GEMM (--batch-invariant): y = x . w^T with fixed_reduction.cuh's reduction for any
// M. Up to kFlatMaxM rows it is gemv.cu's flat GEMM; beyond, a tiled kernel: a block owns up to 128 rows
// of w by 128 tokens (warps of 64 x 32) and streams K through a 4-stage cp.async ring, two 32-wide chunks a
// stage, in range-major order (RangeCursor: chunks 0, 8, 16, ..., then 1, 9, ...): one set of
// accumulators sums the current range from +0, a second adds each finished range in range order — the
// flat GEMM's warp-order sum of its per-warp partials, bit for bit. No split-K: a row's reduction never
// depends on how many rows share the launch.
//
// Shared-memory rows are 128 bytes (64 bf16); fragments are read as 16-byte vectors (lane (g, t): k
// 8t .. 8t + 7 of a 32-wide chunk, fixed_reduction's layout), and odd rows keep their 16-byte pieces in
// the other half of the row (piece ^ 4) so the 8 lanes of a quarter-warp (rows r, r + 1) hit all 32 banks.
#include <algorithm>

#include "backends/cuda/common.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/fixed_reduction.cuh"
#include "backends/cuda/kernels.h"

namespace kestrel::backends::cuda {
namespace {

constexpr int kSliceK = 64;  // K per pipeline stage: two 32-wide chunks
constexpr int kStages = 4;   // ring depth
constexpr int kRowBytes = kSliceK * 2;

// A block of WW x WT warps, each owning 64 rows of w by 32 tokens: 128 x 128 for large M; smaller blocks
// (several per SM) where a large tile would leave SMs idle — no split-K is allowed, so the tile size is
// the only way to more blocks.
template <int WW, int WT>
struct Tile {
  static constexpr int kW = 64 * WW, kT = 32 * WT, kThreads = 32 * WW * WT;
  static constexpr size_t kStageBytes = size_t{kW + kT} * kRowBytes;
  static constexpr size_t kSmem = kStages * kStageBytes;
};

__device__ __forceinline__ uint32_t piece_offset(int row, int piece) {
  return row * kRowBytes + ((piece ^ ((row & 1) << 2)) << 4);
}

__device__ __forceinline__ uint4 lds128(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr));
  return v;
}

template <typename Ty, int WW, int WT>
__global__ void __launch_bounds__(Tile<WW, WT>::kThreads, 1)
    gemm_tiled_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w, const float* __restrict__ bias,
                      Ty* __restrict__ y, int M, int N, int K) {
  using T = Tile<WW, WT>;
  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t ring = smem_addr(smem);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int n0 = blockIdx.x * T::kW, m0 = blockIdx.y * T::kT;
  const int chunks = K / 32, slices = (chunks + 1) / 2;

  // Slice s (chunks 2s and 2s + 1 in range-major order) into ring stage s % kStages, w rows first, then
  // x rows: 16-byte pieces, 8 per row (pieces 0-3 the first chunk, 4-7 the second).
  // Slices are loaded in order, so one cursor serves every load.
  RangeCursor next_load(chunks);
  auto load = [&](int s) {
    const uint32_t stage = ring + (s % kStages) * T::kStageBytes;
    const int c0 = next_load.chunk();
    next_load.advance();
    int c1 = -1;  // an odd count's last slice has one chunk
    if (2 * s + 1 < chunks) {
      c1 = next_load.chunk();
      next_load.advance();
    }
    auto copy = [&](uint32_t dst_tile, const bf16* src, int row0, int rows, int q) {
      const int row = q / 8, piece = q % 8, c = piece < 4 ? c0 : c1, r = row0 + row;
      cp_async16(dst_tile + piece_offset(row, piece),
                 src + static_cast<size_t>(min(r, rows - 1)) * K + max(c, 0) * 32 + (piece % 4) * 8,
                 c >= 0 && r < rows);
    };
#pragma unroll
    for (int i = 0; i < T::kW * 8 / T::kThreads; ++i) copy(stage, w, n0, N, tid + i * T::kThreads);
#pragma unroll
    for (int i = 0; i < T::kT * 8 / T::kThreads; ++i) copy(stage + T::kW * kRowBytes, x, m0, M, tid + i * T::kThreads);
  };

  const int w_row0 = (warp % WW) * 64, t_row0 = (warp / WW) * 32;
  float acc[4][4][4] = {}, total[4][4][4] = {};
  int range = 0;  // the range acc sums
  RangeCursor next(chunks);
  // f(mt, nt, e) for every accumulator element of this lane.
  auto each_acc = [](auto&& f) {
#pragma unroll
    for (int mt = 0; mt < 4; ++mt)
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) f(mt, nt, e);
  };
  auto close_range = [&] {
    each_acc([&](int mt, int nt, int e) {
      total[mt][nt][e] += acc[mt][nt][e];
      acc[mt][nt][e] = 0.f;
    });
    ++range;
  };

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < slices) load(s);
    cp_async_commit();  // empty groups keep the wait counts uniform
  }
  for (int s = 0; s < slices; ++s) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // slice s is visible, and every warp is done with the stage refilled below
    if (s + kStages - 1 < slices) load(s + kStages - 1);
    cp_async_commit();
    const uint32_t stage = ring + (s % kStages) * T::kStageBytes, xs = stage + T::kW * kRowBytes;
#pragma unroll
    for (int cc = 0; cc < 2; ++cc) {
      if (2 * s + cc >= chunks) break;
      while (range < next.r) close_range();
      next.advance();
      const int piece = cc * 4 + t;
      uint4 xv[4];
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) xv[nt] = lds128(xs + piece_offset(t_row0 + nt * 8 + g, piece));
#pragma unroll
      for (int mt = 0; mt < 4; ++mt) {
        const int wr = w_row0 + mt * 16 + g;
        const uint4 lo = lds128(stage + piece_offset(wr, piece)), hi = lds128(stage + piece_offset(wr + 8, piece));
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) mma_chunk(acc[mt][nt], lo, hi, xv[nt]);
      }
    }
  }
  while (range < kFixedRanges) close_range();  // empty ranges add their +0 too

  each_acc([&](int mt, int nt, int e) {
    // Accumulator element e: w row g (+8 for e >= 2) of tile mt, token 2t + (e & 1) of tile nt.
    const int n = n0 + w_row0 + mt * 16 + g + (e >= 2 ? 8 : 0);
    const int m = m0 + t_row0 + nt * 8 + 2 * t + (e & 1);
    if (n < N && m < M) y[static_cast<size_t>(m) * N + n] = from_f32<Ty>(total[mt][nt][e] + (bias ? bias[n] : 0.f));
  });
}

template <typename Ty, int WW, int WT>
void launch_tiled(const bf16* x, const bf16* w, const float* bias, Ty* y, int M, int N, int K, cudaStream_t s) {
  using T = Tile<WW, WT>;
  static const bool configured = [] {
    CUDA_CHECK(
        cudaFuncSetAttribute(gemm_tiled_kernel<Ty, WW, WT>, cudaFuncAttributeMaxDynamicSharedMemorySize, T::kSmem));
    return true;
  }();
  (void)configured;
  const dim3 grid(static_cast<unsigned>((N + T::kW - 1) / T::kW), static_cast<unsigned>((M + T::kT - 1) / T::kT));
  gemm_tiled_kernel<Ty, WW, WT><<<grid, T::kThreads, T::kSmem, s>>>(x, w, bias, y, M, N, K);
  CUDA_CHECK_LAUNCH();
}

template <int WW, int WT>
int64_t blocks_of(int M, int N) {
  return int64_t{(N + Tile<WW, WT>::kW - 1) / Tile<WW, WT>::kW} * ((M + Tile<WW, WT>::kT - 1) / Tile<WW, WT>::kT);
}

// 128 x 128 where that gives every SM a block, else 128 x 64 (the tile only changes speed, never the bits).
template <typename Ty>
void launch_tiled_for(const bf16* x, const bf16* w, const float* bias, Ty* y, int M, int N, int K, int sms,
                      cudaStream_t s) {
  // Measured on the H100 (BENCHMARKS.md): blocks of one or two warps (64 x 32, 64 x 64) were slower than
  // 128 x 64 even where they gave more blocks than SMs (o 4096x4096 at M = 128: 97 us).
  if (blocks_of<2, 4>(M, N) >= sms)
    launch_tiled<Ty, 2, 4>(x, w, bias, y, M, N, K, s);
  else
    launch_tiled<Ty, 2, 2>(x, w, bias, y, M, N, K, s);
}

}  // namespace

void launch_gemm_fixed(const void* x, const void* w, const float* bias, DType y_t, void* y, int M, int N, int K,
                       int sms, cudaStream_t s) {
  if (M == 0 || N == 0) return;
  if (M <= kFlatMaxM) return launch_gemv(x, DType::BF16, w, bias, y_t, y, M, N, K, sms, s);
  auto xb = static_cast<const bf16*>(x);
  auto wb = static_cast<const bf16*>(w);
  if (y_t == DType::BF16)
    launch_tiled_for(xb, wb, bias, static_cast<bf16*>(y), M, N, K, sms, s);
  else
    launch_tiled_for(xb, wb, bias, static_cast<float*>(y), M, N, K, sms, s);
}

}  // namespace kestrel::backends::cuda
