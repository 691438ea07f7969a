// Grouped integer weights (core/linear.h: b-bit code rows, f16 scales and zero points per group) on the GPU:
// the decode-sized product that reads them in place (cuda.gmv) and their decode to bf16 for the GEMMs of
// larger M (cuda.gdequant_*).
//
// The product is bound by the stream of codes (half a byte per weight for U4, a quarter of bf16's), so its
// shape is that of a copy: each warp owns kRows output rows and its lanes take the rows' 16-byte chunks of
// codes in turn, kUnroll chunks of every row in flight per lane (kRows * kUnroll 16-byte loads), bypassing
// L1 so that x stays there. A chunk lies inside one group (gmv_decline), so a lane reads one scale and zero
// point per chunk and row, sums (code - zero) * x over the chunk in f32 and applies the scale once. Codes
// become f16 pairs by the magic-number trick (core/int_codes.h, code_pair_f16), the zero point is subtracted
// in f16 (exact: integers below 2048) and the pair widened to f32, so every product uses the exact weight
// the reference computes. The lanes' sums meet by warp shuffles in a fixed order: a row's result does not
// depend on M up to kGmvMaxM, but differs from the dequantizing GEMMs' beyond.
#include <cuda_fp16.h>

#include <stdexcept>

#include "backends/cuda/common.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/weight_rows.cuh"
#include "core/int_codes.h"

namespace kestrel::backends::cuda {
namespace {

constexpr int kWarps = 4;   // per block
constexpr int kRows = 4;    // output rows per warp: each x value loaded and widened feeds kRows rows
constexpr int kUnroll = 2;  // chunks of each row a lane loads before it computes
static_assert(kRows * kGmvMaxM <= 32, "one lane stores each (row, token) sum");

// Codes per 16-byte chunk of a row.
__host__ __device__ constexpr int chunk_codes(int bits) {
  return 128 / bits;
}

// N consecutive bf16 of x (N = 4, 8 or 16, 8 bytes aligned at least) as N/2 packed pairs.
template <int N>
__device__ __forceinline__ void load_x(const bf16* p, uint32_t (&out)[N / 2]) {
  if constexpr (N == 4) {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
    out[0] = v.x, out[1] = v.y;
  } else {
#pragma unroll
    for (int i = 0; i < N / 8; ++i) {
      const uint4 v = __ldg(reinterpret_cast<const uint4*>(p) + i);
      out[4 * i] = v.x, out[4 * i + 1] = v.y, out[4 * i + 2] = v.z, out[4 * i + 3] = v.w;
    }
  }
}

// Element e of packed bf16 pairs, widened to f32 (a bf16 is the top half of its f32).
template <int N>
__device__ __forceinline__ float x_at(const uint32_t (&xp)[N], int e) {
  const uint32_t p = xp[e / 2];
  return __uint_as_float(e % 2 ? p & 0xffff0000u : p << 16);
}

template <int BITS, int MAXM, typename Ty>
__global__ void __launch_bounds__(kWarps * 32)
    gmv_kernel(const bf16* __restrict__ x, GroupedWeight w, const float* __restrict__ bias, Ty* __restrict__ y, int M,
               int N, int K) {
  constexpr int kWordCodes = 32 / BITS;  // codes per 32-bit word
  constexpr int kPairs = 16 / BITS;      // f16 pairs per word: codes j and j + kPairs
  constexpr int kChunk = chunk_codes(BITS);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int n0 = (blockIdx.x * kWarps + warp) * kRows;
  if (n0 >= N) return;  // no barriers below: a warp without rows just leaves
  const int chunks = K / kChunk;
  const auto* codes = static_cast<const char*>(w.codes);
  const auto* scales = static_cast<const __half*>(w.scales);
  const auto* zeros = static_cast<const __half*>(w.zeros);
  // Rows past N read row N - 1 and are never stored.
  int row[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) row[r] = min(n0 + r, N - 1);
  const __half sym_zero = __float2half(1024.f + (1 << (BITS - 1)));

  float acc[kRows][MAXM] = {};
  for (int c0 = lane; c0 < chunks; c0 += 32 * kUnroll) {
    uint4 cv[kUnroll][kRows];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = min(c0 + 32 * u, chunks - 1);  // past the end: reloads the last chunk, never used
#pragma unroll
      for (int r = 0; r < kRows; ++r)
        cv[u][r] = load_stream16(codes + static_cast<size_t>(row[r]) * w.row_bytes + 16 * c);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = c0 + 32 * u;
      if (c >= chunks) break;
      const int k0 = c * kChunk, g = k0 / w.group_size;
      float scale[kRows];
      __half2 zero2[kRows];  // 1024 + zero point, the offset code_pair_f16 leaves in each half
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const size_t at = static_cast<size_t>(row[r]) * w.groups + g;
        scale[r] = __half2float(scales[at]);
        zero2[r] = __half2half2(zeros ? __hadd(zeros[at], __float2half(1024.f)) : sym_zero);
      }
      float part[kRows][MAXM] = {};
#pragma unroll
      for (int wi = 0; wi < 4; ++wi) {
        float wf[kRows][kWordCodes];  // (code - zero) of this word's codes, exact
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          const uint32_t word = (&cv[u][r].x)[wi];
#pragma unroll
          for (int j = 0; j < kPairs; ++j) {
            const uint32_t pair = code_pair_f16(word, BITS, j);
            const float2 f = __half22float2(__hsub2(*reinterpret_cast<const __half2*>(&pair), zero2[r]));
            wf[r][j] = f.x;
            wf[r][j + kPairs] = f.y;
          }
        }
#pragma unroll
        for (int m = 0; m < MAXM; ++m) {
          if (m >= M) break;
          uint32_t xp[kWordCodes / 2];
          load_x<kWordCodes>(x + static_cast<size_t>(m) * K + k0 + wi * kWordCodes, xp);
#pragma unroll
          for (int e = 0; e < kWordCodes; ++e) {
            const float xe = x_at(xp, e);
#pragma unroll
            for (int r = 0; r < kRows; ++r) part[r][m] = fmaf(wf[r][e], xe, part[r][m]);
          }
        }
      }
#pragma unroll
      for (int r = 0; r < kRows; ++r)
#pragma unroll
        for (int m = 0; m < MAXM; ++m) acc[r][m] = fmaf(scale[r], part[r][m], acc[r][m]);
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int m = 0; m < MAXM; ++m) {
      float v = acc[r][m];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      acc[r][m] = v;
    }
    // Lane r * MAXM + m stores output (m, n0 + r): every lane holds every sum after the butterfly.
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int m = 0; m < MAXM; ++m)
      if (lane == r * MAXM + m && m < M && n0 + r < N)
        y[static_cast<size_t>(m) * N + n0 + r] = from_f32<Ty>(acc[r][m] + (bias ? bias[n0 + r] : 0.f));
}

template <int BITS, int MAXM>
void launch_for(const void* x, const GroupedWeight& w, const float* bias, DType y_t, void* y, int M, int N, int K,
                cudaStream_t s) {
  const unsigned blocks = static_cast<unsigned>((N + kWarps * kRows - 1) / (kWarps * kRows));
  auto xb = static_cast<const bf16*>(x);
  if (y_t == DType::BF16)
    gmv_kernel<BITS, MAXM, bf16><<<blocks, kWarps * 32, 0, s>>>(xb, w, bias, static_cast<bf16*>(y), M, N, K);
  else
    gmv_kernel<BITS, MAXM, float><<<blocks, kWarps * 32, 0, s>>>(xb, w, bias, static_cast<float*>(y), M, N, K);
}

template <int BITS>
void launch_bits(const void* x, const GroupedWeight& w, const float* bias, DType y_t, void* y, int M, int N, int K,
                 cudaStream_t s) {
  // Rows rounded up to a power of two: fewer instantiations, and the FMAs of absent rows are skipped.
  if (M == 1)
    launch_for<BITS, 1>(x, w, bias, y_t, y, M, N, K, s);
  else if (M == 2)
    launch_for<BITS, 2>(x, w, bias, y_t, y, M, N, K, s);
  else if (M <= 4)
    launch_for<BITS, 4>(x, w, bias, y_t, y, M, N, K, s);
  else
    launch_for<BITS, kGmvMaxM>(x, w, bias, y_t, y, M, N, K, s);
}

// One thread per 8 consecutive weights of a row: a 16-byte store; any code type and g_idx.
__global__ void grouped_dequant_kernel(GroupedWeight w, int bits, bf16* __restrict__ out, int64_t units, int K) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= units) return;
  const int per_row = K / 8;
  const int n = static_cast<int>(i / per_row), k0 = 8 * static_cast<int>(i % per_row);
  const auto* row = static_cast<const uint8_t*>(w.codes) + static_cast<size_t>(n) * w.row_bytes;
  const auto* scales = static_cast<const __half*>(w.scales) + static_cast<size_t>(n) * w.groups;
  const auto* zeros = w.zeros ? static_cast<const __half*>(w.zeros) + static_cast<size_t>(n) * w.groups : nullptr;
  const float mid = static_cast<float>(1 << (bits - 1));
  float f[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const int k = k0 + e;
    const int g = w.g_idx ? w.g_idx[k] : k / w.group_size;
    const float zero = zeros ? __half2float(zeros[g]) : mid;
    f[e] = (static_cast<float>(code_at(row, bits, k)) - zero) * __half2float(scales[g]);
  }
  *reinterpret_cast<uint4*>(out + static_cast<size_t>(n) * K + k0) = pack_bf16x8(f);
}

}  // namespace

const char* gmv_decline(DType codes_t, int K, int group_size, int groups, bool act_order) {
  if (codes_t != DType::U2 && codes_t != DType::U4 && codes_t != DType::U8)
    return "U2, U4 or U8 codes only (U3 codes cross 32-bit words): the dequantizing GEMMs take the others";
  if (act_order) return "act-order (g_idx) weights: the dequantizing GEMMs read g_idx";
  const int chunk = chunk_codes(code_bits(codes_t));
  if (K % chunk != 0) return "K must fill whole 16-byte chunks of codes (32 U4, 16 U8, 64 U2 codes)";
  if (groups > 1 && group_size % chunk != 0) return "groups must be whole 16-byte chunks of codes";
  return nullptr;
}

void launch_gmv(const void* x, const GroupedWeight& w, const float* bias, DType y_t, void* y, int M, int N, int K,
                cudaStream_t s) {
  if (M == 0 || N == 0) return;
  if (M > kGmvMaxM || gmv_decline(w.codes_t, K, w.group_size, w.groups, w.g_idx != nullptr))
    throw std::invalid_argument("launch_gmv: a weight or shape gmv_decline refuses");
  switch (w.codes_t) {
    case DType::U2: launch_bits<2>(x, w, bias, y_t, y, M, N, K, s); break;
    case DType::U4: launch_bits<4>(x, w, bias, y_t, y, M, N, K, s); break;
    default: launch_bits<8>(x, w, bias, y_t, y, M, N, K, s); break;
  }
  CUDA_CHECK(cudaGetLastError());
}

void launch_grouped_dequant_bf16(const GroupedWeight& w, void* out, int N, int K, cudaStream_t s) {
  const int64_t units = static_cast<int64_t>(N) * (K / 8);
  if (units == 0) return;
  const int bits = code_bits(w.codes_t);
  if (K % 8 != 0 || bits == 0)
    throw std::invalid_argument("launch_grouped_dequant_bf16: needs code rows and K % 8 == 0");
  grouped_dequant_kernel<<<static_cast<unsigned>((units + 255) / 256), 256, 0, s>>>(w, bits, static_cast<bf16*>(out),
                                                                                    units, K);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace kestrel::backends::cuda
