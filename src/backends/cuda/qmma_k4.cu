// Decode-sized products with Q4_K weights read in their GGUF layout (M <= kQmmaMaxM rows): y = x . w^T on
// tensor cores, with the integer weights exact. The flat GEMM (gemv.cu) decodes every weight in f32 and
// rounds it to bf16, ~8 instructions a weight, which caps Q4_K at a third of the memory bandwidth; here a
// weight costs ~1.3: two byte permutes and four LOP3s turn a 32-bit word of eight nibbles into f16 pairs
// 1024 + q (or 1024 + 16q) and one HFMA2 a pair scales them by the 6-bit sub-block scale, exactly (sc * q
// <= 945 fits f16's 11 bits). The MMA multiplies them with x in f16 (bf16 x converts exactly inside f16's
// range, |x| < 65504) into f32; a second MMA with the sub-block mins broadcast as A gives sum(m * x). After
// each 256-element super-block: acc += d * sum(sc q x) - dmin * sum(m x), the two f16 super-block scales
// applied in f32 — one rounding per super-block, so a one-hot x returns the reference dequantizer's weight
// bit for bit.
//
// The k order inside an MMA is free as long as A and B agree, so lane (g, t) takes the 16 bytes at
// 16t of each 64-byte half of a block's nibbles (one 16-byte load per row and half; the quad's four lanes
// cover the half) and x's matching elements: bytes 16t .. 16t + 15 of half h hold, in their low nibbles,
// elements 64p + l and in their high nibbles 64p + 32 + l, p = 2h + t / 2, l = 16(t % 2) + 0..15 — two
// sub-blocks, each a whole K-tile of this lane's slots. A block owns 16 or 32 rows; warp w of 8 takes the
// super-blocks c with c % 8 == w and the warps' sums meet in shared memory.
#include <cuda_fp16.h>

#include <stdexcept>

#include "backends/cuda/common.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/mma.cuh"

namespace kestrel::backends::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kSuper = 256;       // elements of a Q4_K block
constexpr int kBlockBytes = 144;  // d, dmin (f16), 12 bytes of 6-bit scales and mins, 128 of nibbles

__device__ __forceinline__ __half2 h2(uint32_t u) {
  return *reinterpret_cast<const __half2*>(&u);
}
__device__ __forceinline__ uint32_t u32(__half2 h) {
  return *reinterpret_cast<const uint32_t*>(&h);
}

// Byte idx (a value < 64) of w as the f16 pair {v, v}: the permute builds 0x64vv = 1024 + v in both halves.
__device__ __forceinline__ __half2 byte_pair(uint32_t w, uint32_t idx) {
  const uint32_t magic = __byte_perm(w, 0x64u, idx | 4u << 4 | idx << 8 | 4u << 12);
  return __hsub2(h2(magic), h2(0x64006400u));
}

// A bf16 pair as an f16 pair (exact within f16's range).
__device__ __forceinline__ uint32_t f16_pair(uint32_t bf) {
  return u32(__floats2half2_rn(__uint_as_float(bf << 16), __uint_as_float(bf & 0xffff0000u)));
}

// One row's constants for half h of a block, lane t: its low-nibble sub-block j = 4h + 2(t / 2) and the
// high-nibble one j + 1. lo = {sc, sc} with c_lo = -1024 sc undoes the 1024 of a low-nibble pair; the
// high nibbles sit at 16q, so sc / 16 and -64 sc. m_lo / m_hi: the sub-blocks' mins, for the second MMA.
struct HalfScales {
  __half2 lo, c_lo, hi, c_hi;
  uint32_t m_lo, m_hi;
};
__device__ __forceinline__ HalfScales half_scales(const uint4& head, int h, int t) {
  const uint32_t s0 = head.y, s1 = head.z, s2 = head.w;  // scales[0..3], [4..7], [8..11]
  const uint32_t sc = h == 0 ? s0 & 0x3F3F3F3Fu : (s2 & 0x0F0F0F0Fu) | ((s0 >> 2) & 0x30303030u);
  const uint32_t mn = h == 0 ? s1 & 0x3F3F3F3Fu : ((s2 >> 4) & 0x0F0F0F0Fu) | ((s1 >> 2) & 0x30303030u);
  const uint32_t idx = 2u * static_cast<uint32_t>(t / 2);
  HalfScales s;
  const __half2 lo = byte_pair(sc, idx), hi = byte_pair(sc, idx + 1);
  s.lo = lo;
  s.c_lo = __hmul2(lo, __float2half2_rn(-1024.f));
  s.hi = __hmul2(hi, __float2half2_rn(0.0625f));
  s.c_hi = __hmul2(hi, __float2half2_rn(-64.f));
  s.m_lo = u32(byte_pair(mn, idx));
  s.m_hi = u32(byte_pair(mn, idx + 1));
  return s;
}

// The four f16 pairs of a word of nibbles: bytes b0..b3 -> {lo(b0), lo(b1)}, {lo(b2), lo(b3)} (elements l,
// l + 1 and l + 2, l + 3 of the low sub-block) and the same of the high nibbles, each times its sub-block
// scale.
struct WordPairs {
  uint32_t lo01, lo23, hi01, hi23;
};
__device__ __forceinline__ WordPairs word_pairs(uint32_t w, const HalfScales& s) {
  const uint32_t p01 = __byte_perm(w, 0u, 0x4140u), p23 = __byte_perm(w, 0u, 0x4342u);
  WordPairs r;
  r.lo01 = u32(__hfma2(h2((p01 & 0x000F000Fu) | 0x64006400u), s.lo, s.c_lo));
  r.lo23 = u32(__hfma2(h2((p23 & 0x000F000Fu) | 0x64006400u), s.lo, s.c_lo));
  r.hi01 = u32(__hfma2(h2((p01 & 0x00F000F0u) | 0x64006400u), s.hi, s.c_hi));
  r.hi23 = u32(__hfma2(h2((p23 & 0x00F000F0u) | 0x64006400u), s.hi, s.c_hi));
  return r;
}

__device__ __forceinline__ uint32_t word(const uint4& v, int k) {
  return k == 0 ? v.x : k == 1 ? v.y : k == 2 ? v.z : v.w;
}

// MT m16 tiles of rows per block, NT n8 tiles of tokens. One block per SM with two row tiles (registers),
// two with one.
template <typename Ty, int MT, int NT>
__global__ void __launch_bounds__(kWarps * 32, MT == 1 ? 2 : 1)
    qmma_k4_kernel(const bf16* __restrict__ x, const uint8_t* __restrict__ w, const float* __restrict__ bias,
                   Ty* __restrict__ y, int M, int N, int K) {
  constexpr int E = 4 * MT * NT;  // accumulators per lane
  __shared__ float partial[kWarps][E][32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int n0 = blockIdx.x * 16 * MT;
  const int supers = K / kSuper;
  const size_t row_bytes = static_cast<size_t>(supers) * kBlockBytes;

  // Row 2i of this lane's is row g of tile i / 2... : wr[2 mt] row g, wr[2 mt + 1] row g + 8 of tile mt
  // (clamped: rows past N load row N-1 and are never stored).
  const uint8_t* wr[2 * MT];
#pragma unroll
  for (int i = 0; i < 2 * MT; ++i)
    wr[i] = w + static_cast<size_t>(min(n0 + 16 * (i / 2) + g + 8 * (i % 2), N - 1)) * row_bytes;
  const bf16* xr[NT];
  bool has_x[NT];
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    has_x[j] = 8 * j + g < M;
    // This lane's elements of a block: half h low at 64(2h + t / 2) + 16(t % 2), high 32 further.
    xr[j] = x + static_cast<size_t>(has_x[j] ? 8 * j + g : 0) * K + 64 * (t / 2) + 16 * (t % 2);
  }

  if (t == 0 && warp < supers) {
#pragma unroll
    for (int i = 0; i < 2 * MT; ++i) {
      prefetch_l2(wr[i] + static_cast<size_t>(warp) * kBlockBytes);
      prefetch_l2(wr[i] + static_cast<size_t>(warp) * kBlockBytes + kBlockBytes - 1);
    }
  }
  pdl_wait();
  pdl_launch_dependents();

  float acc[MT][NT][4] = {};
  for (int c = warp; c < supers; c += kWarps) {
    uint4 head[2 * MT], q[2 * MT][2], xv[NT][2][4];  // xv[j][h]: low 0..7, 8..15, high 0..7, 8..15
#pragma unroll
    for (int i = 0; i < 2 * MT; ++i) {
      const uint8_t* b = wr[i] + static_cast<size_t>(c) * kBlockBytes;
      head[i] = __ldg(reinterpret_cast<const uint4*>(b));
      q[i][0] = __ldg(reinterpret_cast<const uint4*>(b + 16 + 16 * t));
      q[i][1] = __ldg(reinterpret_cast<const uint4*>(b + 16 + 64 + 16 * t));
    }
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int v = 0; v < 4; ++v)
          xv[j][h][v] = has_x[j] ? __ldg(reinterpret_cast<const uint4*>(xr[j] + static_cast<size_t>(c) * kSuper +
                                                                        128 * h + 32 * (v / 2) + 8 * (v % 2)))
                                 : make_uint4(0, 0, 0, 0);
          // x to f16 pairs in place: the B fragments of every row tile.
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int v = 0; v < 4; ++v) {
          uint4& r = xv[j][h][v];
          r = make_uint4(f16_pair(r.x), f16_pair(r.y), f16_pair(r.z), f16_pair(r.w));
        }

#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      float sq[NT][4] = {}, sm[NT][4] = {};  // this block's sum(sc q x) and sum(m x)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const HalfScales s0 = half_scales(head[2 * mt], h, t), s1 = half_scales(head[2 * mt + 1], h, t);
        const uint32_t m_lo[4] = {s0.m_lo, s1.m_lo, s0.m_lo, s1.m_lo};
        const uint32_t m_hi[4] = {s0.m_hi, s1.m_hi, s0.m_hi, s1.m_hi};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const WordPairs r0 = word_pairs(word(q[2 * mt][h], k), s0), r1 = word_pairs(word(q[2 * mt + 1][h], k), s1);
          const uint32_t a_lo[4] = {r0.lo01, r1.lo01, r0.lo23, r1.lo23};
          const uint32_t a_hi[4] = {r0.hi01, r1.hi01, r0.hi23, r1.hi23};
#pragma unroll
          for (int j = 0; j < NT; ++j) {
            // x pairs of word k: low elements 4k .. 4k + 3 of this lane's 16, then the high ones.
            const uint32_t b_lo0 = word(xv[j][h][k / 2], 2 * (k % 2)), b_lo1 = word(xv[j][h][k / 2], 2 * (k % 2) + 1);
            const uint32_t b_hi0 = word(xv[j][h][2 + k / 2], 2 * (k % 2)),
                           b_hi1 = word(xv[j][h][2 + k / 2], 2 * (k % 2) + 1);
            mma_f16_16816(sq[j], a_lo, b_lo0, b_lo1);
            mma_f16_16816(sm[j], m_lo, b_lo0, b_lo1);
            mma_f16_16816(sq[j], a_hi, b_hi0, b_hi1);
            mma_f16_16816(sm[j], m_hi, b_hi0, b_hi1);
          }
        }
      }
      // Accumulators 0, 1: row g; 2, 3: row g + 8.
      const float2 dm0 = __half22float2(h2(head[2 * mt].x)), dm1 = __half22float2(h2(head[2 * mt + 1].x));
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float2 dm = e < 2 ? dm0 : dm1;
          acc[mt][j][e] = fmaf(-dm.y, sm[j][e], fmaf(dm.x, sq[j][e], acc[mt][j][e]));
        }
    }
  }

#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) partial[warp][(mt * NT + j) * 4 + e][lane] = acc[mt][j][e];
  __syncthreads();
  for (int i = threadIdx.x; i < E * 32; i += kWarps * 32) {
    const int l = i % 32, a = i / 32;
    const int mt = a / (4 * NT), j = a / 4 % NT, e = a % 4;
    float v = 0.f;
#pragma unroll
    for (int ww = 0; ww < kWarps; ++ww) v += partial[ww][a][l];
    // Accumulator e of lane l: row l / 4 (+8 for e >= 2) of tile mt, token 8j + 2(l % 4) + (e & 1).
    const int n = n0 + mt * 16 + l / 4 + (e >= 2 ? 8 : 0);
    const int m = 8 * j + 2 * (l % 4) + (e & 1);
    if (n < N && m < M) y[static_cast<size_t>(m) * N + n] = from_f32<Ty>(v + (bias ? bias[n] : 0.f));
  }
}

template <int MT, int NT>
void launch_tiles(const void* x, const void* w, const float* bias, DType y_t, void* y, int M, int N, int K,
                  cudaStream_t s) {
  const unsigned grid = static_cast<unsigned>((N + 16 * MT - 1) / (16 * MT));
  auto xb = static_cast<const bf16*>(x);
  auto wb = static_cast<const uint8_t*>(w);
  const bool dependent = M == 1;
  if (y_t == DType::BF16)
    launch_kernel(dependent, qmma_k4_kernel<bf16, MT, NT>, dim3(grid), dim3(kWarps * 32), 0, s, xb, wb, bias,
                  static_cast<bf16*>(y), M, N, K);
  else
    launch_kernel(dependent, qmma_k4_kernel<float, MT, NT>, dim3(grid), dim3(kWarps * 32), 0, s, xb, wb, bias,
                  static_cast<float*>(y), M, N, K);
}

}  // namespace

void launch_qmma(const void* x, DType w_t, const void* w, const float* bias, DType y_t, void* y, int M, int N, int K,
                 int sms, cudaStream_t s) {
  if (M == 0 || N == 0) return;
  if (w_t != DType::Q4_K || K % kSuper != 0 || M > kQmmaMaxM)
    throw std::invalid_argument("launch_qmma: Q4_K weights, K % 256 == 0 and at most 16 rows");
  // Two row tiles a block (one x conversion feeds both) once there are blocks enough for every SM.
  const bool wide = (N + 31) / 32 >= 2 * sms;
  if (M <= 8)
    wide ? launch_tiles<2, 1>(x, w, bias, y_t, y, M, N, K, s) : launch_tiles<1, 1>(x, w, bias, y_t, y, M, N, K, s);
  else
    launch_tiles<1, 2>(x, w, bias, y_t, y, M, N, K, s);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace kestrel::backends::cuda
