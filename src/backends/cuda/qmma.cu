// Decode-sized products with K-quant weights read in their GGUF layout (M <= kQmmaMaxM rows): y = x . w^T
// on tensor cores (f16 MMA, f32 accumulators). The flat GEMM (gemv.cu) decodes every weight in f32 and
// rounds it to bf16, ~8 instructions a weight, which caps Q4_K and Q6_K at a third to a half of the memory
// bandwidth; here a weight costs one to two. Byte permutes and LOP3s drop the packed integers into the
// mantissa of an f16 constant (1024 + q, 1024 + 16q or 64 + q) and one HFMA2 a pair removes the constant
// and applies the sub-block scale. x enters in f16 (bf16 converts exactly inside f16's range, |x| < 65504),
// and the super-block scales are applied in f32 once per 256 elements.
//
// - Q4_K: sc * q <= 945 fits f16's 11 bits, so the weights are exact; a second MMA with the sub-block mins
//   broadcast as A gives sum(m * x), and acc += d * sum(sc q x) - dmin * sum(m x) rounds once per super-block
//   (a one-hot x returns the reference dequantizer's weight bit for bit).
// - Q6_K: sc * (q - 32) (int8 scale, up to 4096 in magnitude) is rounded to f16 — exact up to 2048, the
//   nearest even integer above, 2^-12 relative at most (bf16 weights, the flat GEMM's, round at 2^-9).
//
// The k order inside an MMA is free as long as A and B agree, so each format gives lane (g, t) the bytes
// it can load wide and x's matching elements (Format::x_offset). A block owns 16 rows; warp w of 8 takes
// the super-blocks c with c % 8 == w and the warps' sums meet in shared memory.
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
constexpr int kSuper = 256;  // elements of a K-quant block
constexpr int kXVecs = 8;    // 16-byte vectors of x a lane takes per block and token

// Byte idx of w (an unsigned value < 1024 - 1024 + 256) as the f16 pair {1024 + v, 1024 + v}.
__device__ __forceinline__ __half2 byte_pair_1024(uint32_t w, uint32_t idx) {
  return h2(__byte_perm(w, 0x64u, idx | 4u << 4 | idx << 8 | 4u << 12));
}

// Both m16n8k16 K-tiles of a row pair's four f16 pairs p[row][0..3] (row 0: g, row 1: g + 8) against x
// words w0..w3: pairs 0, 1 with words 0, 1; pairs 2, 3 with words 2, 3.
template <int NT>
__device__ __forceinline__ void mma_pairs(float (&acc)[NT][4], const uint32_t (&p0)[4], const uint32_t (&p1)[4],
                                          const uint4 (&xv)[NT][kXVecs], int v) {
  const uint32_t a0[4] = {p0[0], p1[0], p0[1], p1[1]}, a1[4] = {p0[2], p1[2], p0[3], p1[3]};
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    mma_f16_16816(acc[j], a0, xv[j][v].x, xv[j][v].y);
    mma_f16_16816(acc[j], a1, xv[j][v].z, xv[j][v].w);
  }
}

// ---- Q4_K: d, dmin (f16), 12 bytes of 6-bit scales and mins, 128 bytes of nibbles ----
// Lane t takes the 16 bytes at 16t of each 64-byte half h of the nibbles (one 16-byte load each; the quad
// covers the half): their low nibbles are elements 64p + l, the high ones 64p + 32 + l, p = 2h + t / 2,
// l = 16(t % 2) + 0..15 — sub-blocks 2p and 2p + 1.
struct Q4K {
  static constexpr int kBytes = 144;
  struct Row {
    uint4 head, q[2];
  };
  __device__ static Row load(const uint8_t* b, int t) {
    return {__ldg(reinterpret_cast<const uint4*>(b)), __ldg(reinterpret_cast<const uint4*>(b + 16 + 16 * t)),
            __ldg(reinterpret_cast<const uint4*>(b + 80 + 16 * t))};
  }
  // x vector v = 4h + u: half h's low elements 0..7 (u = 0), 8..15 (1), then the high ones (2, 3).
  __device__ static int x_offset(int v, int t) {
    const int h = v / 4, u = v % 4;
    return 128 * h + 64 * (t / 2) + 16 * (t % 2) + 32 * (u / 2) + 8 * (u % 2);
  }

  // One row's constants for half h, lane t: the low-nibble sub-block j = 4h + 2(t / 2) and j + 1. lo = sc
  // with c_lo = -1024 sc undoes the 1024 of a low-nibble pair; high nibbles sit at 16q: sc / 16, -64 sc.
  struct HalfScales {
    __half2 lo, c_lo, hi, c_hi;
    uint32_t m_lo, m_hi;
  };
  __device__ static HalfScales half_scales(const uint4& head, int h, int t) {
    const uint32_t s0 = head.y, s1 = head.z, s2 = head.w;  // scales[0..3], [4..7], [8..11]
    const uint32_t sc = h == 0 ? s0 & 0x3F3F3F3Fu : (s2 & 0x0F0F0F0Fu) | ((s0 >> 2) & 0x30303030u);
    const uint32_t mn = h == 0 ? s1 & 0x3F3F3F3Fu : ((s2 >> 4) & 0x0F0F0F0Fu) | ((s1 >> 2) & 0x30303030u);
    const uint32_t idx = 2u * static_cast<uint32_t>(t / 2);
    const __half2 k1024 = h2(0x64006400u);
    const __half2 lo = __hsub2(byte_pair_1024(sc, idx), k1024), hi = __hsub2(byte_pair_1024(sc, idx + 1), k1024);
    return {lo,
            __hmul2(lo, __float2half2_rn(-1024.f)),
            __hmul2(hi, __float2half2_rn(0.0625f)),
            __hmul2(hi, __float2half2_rn(-64.f)),
            u32(__hsub2(byte_pair_1024(mn, idx), k1024)),
            u32(__hsub2(byte_pair_1024(mn, idx + 1), k1024))};
  }
  // Word w of nibbles: bytes b0..b3 -> {lo(b0), lo(b1)}, {lo(b2), lo(b3)} (elements l .. l + 3 of the low
  // sub-block) into lo[0..1], the high nibbles into hi[0..1], each times its sub-block scale, exactly.
  __device__ static void word_pairs(uint32_t w, const HalfScales& s, uint32_t* lo, uint32_t* hi) {
    const uint32_t p01 = __byte_perm(w, 0u, 0x4140u), p23 = __byte_perm(w, 0u, 0x4342u);
    lo[0] = u32(__hfma2(h2((p01 & 0x000F000Fu) | 0x64006400u), s.lo, s.c_lo));
    lo[1] = u32(__hfma2(h2((p23 & 0x000F000Fu) | 0x64006400u), s.lo, s.c_lo));
    hi[0] = u32(__hfma2(h2((p01 & 0x00F000F0u) | 0x64006400u), s.hi, s.c_hi));
    hi[1] = u32(__hfma2(h2((p23 & 0x00F000F0u) | 0x64006400u), s.hi, s.c_hi));
  }

  // acc (row g: accumulators 0, 1; row g + 8: 2, 3) += this block's products.
  template <int NT>
  __device__ static void block_product(const Row& r0, const Row& r1, const uint4 (&xv)[NT][kXVecs], float (&acc)[NT][4],
                                       int t) {
    float sq[NT][4] = {}, sm[NT][4] = {};  // sum(sc q x) and sum(m x)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const HalfScales s0 = half_scales(r0.head, h, t), s1 = half_scales(r1.head, h, t);
      const uint32_t m_lo[4] = {s0.m_lo, s1.m_lo, s0.m_lo, s1.m_lo}, m_hi[4] = {s0.m_hi, s1.m_hi, s0.m_hi, s1.m_hi};
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        // Word k: low elements 4k .. 4k + 3 of the lane's 16 (x vector 4h + k / 2, words 2(k % 2), +1).
        uint32_t lo0[2], hi0[2], lo1[2], hi1[2];
        word_pairs(word(r0.q[h], k), s0, lo0, hi0);
        word_pairs(word(r1.q[h], k), s1, lo1, hi1);
        const uint32_t a_lo[4] = {lo0[0], lo1[0], lo0[1], lo1[1]}, a_hi[4] = {hi0[0], hi1[0], hi0[1], hi1[1]};
        const int vl = 4 * h + k / 2, vh = vl + 2, wi = 2 * (k % 2);
#pragma unroll
        for (int j = 0; j < NT; ++j) {
          const uint32_t bl0 = word(xv[j][vl], wi), bl1 = word(xv[j][vl], wi + 1);
          const uint32_t bh0 = word(xv[j][vh], wi), bh1 = word(xv[j][vh], wi + 1);
          mma_f16_16816(sq[j], a_lo, bl0, bl1);
          mma_f16_16816(sm[j], m_lo, bl0, bl1);
          mma_f16_16816(sq[j], a_hi, bh0, bh1);
          mma_f16_16816(sm[j], m_hi, bh0, bh1);
        }
      }
    }
    const float2 dm0 = __half22float2(h2(r0.head.x)), dm1 = __half22float2(h2(r1.head.x));
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 dm = e < 2 ? dm0 : dm1;
        acc[j][e] = fmaf(-dm.y, sm[j][e], fmaf(dm.x, sq[j][e], acc[j][e]));
      }
  }
};

// ---- Q6_K: 128 bytes of low nibbles, 64 of 2-bit highs, 16 int8 scales, d (f16); 210 bytes, so a block
// is only 2-byte aligned and every load is 16 bits ----
// Element 128h + 32k + l (quarter k of half h) is the low (k < 2) or high nibble of ql[64h + 32(k % 2) + l]
// with bits 2k, 2k + 1 of qh[32h + l] above; scale scales[8h + 2k + l / 16]. Lane t takes l = 8t .. 8t + 7
// of every quarter: byte pairs at 8t + 2i, i = 0..3.
struct Q6K {
  static constexpr int kBytes = 210;
  struct Row {
    uint32_t ql[2][2][4], qh[2][4], sc[2][4], d;  // 16-bit loads
  };
  __device__ static Row load(const uint8_t* b, int t) {
    const auto* p = reinterpret_cast<const uint16_t*>(b);
    Row r;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        r.ql[h][0][i] = __ldg(p + 32 * h + 4 * t + i);
        r.ql[h][1][i] = __ldg(p + 32 * h + 16 + 4 * t + i);
        r.qh[h][i] = __ldg(p + 64 + 16 * h + 4 * t + i);
        r.sc[h][i] = __ldg(p + 96 + 4 * h + i);  // scales 8h + 2i and 8h + 2i + 1
      }
    }
    r.d = __ldg(p + 104);
    return r;
  }
  // x vector v = 4h + k: quarter k of half h, elements 8t .. 8t + 7.
  __device__ static int x_offset(int v, int t) {
    return 32 * v + 8 * t;
  }

  // The f16 pair {64 + q(l), 64 + q(l + 1)} times sc, minus 96 sc: sc * (q - 32), rounded once. 64 + q:
  // q's six bits at mantissa bits 4..9 of 64.0 (0x5400).
  template <int K>
  __device__ static uint32_t pair(uint32_t ql, uint32_t qh, __half2 s, __half2 c) {
    const uint32_t p = __byte_perm(ql, 0u, 0x4140u), q = __byte_perm(qh, 0u, 0x4140u);
    const uint32_t nib = (K < 2 ? p << 4 : p) & 0x00F000F0u;
    const uint32_t high = (q << (8 - 2 * K)) & 0x03000300u;
    return u32(__hfma2(h2(nib | high | 0x54005400u), s, c));
  }
  template <int K>
  __device__ static void quarter(const Row& r, int h, int t, uint32_t (&out)[4]) {
    // The int8 scale as {sc, sc}: the byte + 128 into 1024 + that, less 1152.
    const uint32_t idx = static_cast<uint32_t>(t / 2);
    const __half2 s = __hsub2(byte_pair_1024(r.sc[h][K] ^ 0x8080u, idx), h2(0x64806480u));
    const __half2 c = __hmul2(s, __float2half2_rn(-96.f));
#pragma unroll
    for (int i = 0; i < 4; ++i) out[i] = pair<K>(r.ql[h][K % 2][i], r.qh[h][i], s, c);
  }

  template <int NT>
  __device__ static void block_product(const Row& r0, const Row& r1, const uint4 (&xv)[NT][kXVecs], float (&acc)[NT][4],
                                       int t) {
    float sq[NT][4] = {};
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      uint32_t p0[4], p1[4];
      quarter<0>(r0, h, t, p0), quarter<0>(r1, h, t, p1), mma_pairs(sq, p0, p1, xv, 4 * h + 0);
      quarter<1>(r0, h, t, p0), quarter<1>(r1, h, t, p1), mma_pairs(sq, p0, p1, xv, 4 * h + 1);
      quarter<2>(r0, h, t, p0), quarter<2>(r1, h, t, p1), mma_pairs(sq, p0, p1, xv, 4 * h + 2);
      quarter<3>(r0, h, t, p0), quarter<3>(r1, h, t, p1), mma_pairs(sq, p0, p1, xv, 4 * h + 3);
    }
    const float d0 = __half2float(__ushort_as_half(static_cast<unsigned short>(r0.d))),
                d1 = __half2float(__ushort_as_half(static_cast<unsigned short>(r1.d)));
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[j][e] = fmaf(e < 2 ? d0 : d1, sq[j][e], acc[j][e]);
  }
};

// A block owns 16 rows (one m16 tile: two blocks fit an SM, <= 128 registers; two tiles a block, one x
// conversion for both, measured 5% slower on the H100), NT n8 tiles of tokens.
template <class F, typename Ty, int NT>
__global__ void __launch_bounds__(kWarps * 32, 2)
    qmma_kernel(const bf16* __restrict__ x, const uint8_t* __restrict__ w, const float* __restrict__ bias,
                Ty* __restrict__ y, int M, int N, int K) {
  constexpr int E = 4 * NT;  // accumulators per lane
  __shared__ float partial[kWarps][E][32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int n0 = blockIdx.x * 16;
  const int supers = K / kSuper;
  const size_t row_bytes = static_cast<size_t>(supers) * F::kBytes;

  // wr[0]: row g, wr[1]: row g + 8 (clamped: rows past N load row N-1 and are never stored).
  const uint8_t* wr[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) wr[i] = w + static_cast<size_t>(min(n0 + g + 8 * i, N - 1)) * row_bytes;
  const bf16* xr[NT];
  bool has_x[NT];
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    has_x[j] = 8 * j + g < M;
    xr[j] = x + static_cast<size_t>(has_x[j] ? 8 * j + g : 0) * K;
  }
  int x_off[kXVecs];
#pragma unroll
  for (int v = 0; v < kXVecs; ++v) x_off[v] = F::x_offset(v, t);

  // w is no kernel's output, so L2 starts fetching the first block's lines before the wait (launch.cuh).
  if (t == 0 && warp < supers) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      prefetch_l2(wr[i] + static_cast<size_t>(warp) * F::kBytes);
      prefetch_l2(wr[i] + static_cast<size_t>(warp) * F::kBytes + F::kBytes - 1);
    }
  }
  pdl_wait();
  pdl_launch_dependents();

  float acc[NT][4] = {};
  for (int c = warp; c < supers; c += kWarps) {
    typename F::Row rows[2];
    uint4 xv[NT][kXVecs];
#pragma unroll
    for (int i = 0; i < 2; ++i) rows[i] = F::load(wr[i] + static_cast<size_t>(c) * F::kBytes, t);
    // And L2 fetches this warp's next block meanwhile (Q4_K GEMMs of a batch-1 step: -1.6%).
    if (t == 0 && c + kWarps < supers) {
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        prefetch_l2(wr[i] + static_cast<size_t>(c + kWarps) * F::kBytes);
        prefetch_l2(wr[i] + static_cast<size_t>(c + kWarps) * F::kBytes + F::kBytes - 1);
      }
    }
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int v = 0; v < kXVecs; ++v)
        xv[j][v] = has_x[j] ? __ldg(reinterpret_cast<const uint4*>(xr[j] + static_cast<size_t>(c) * kSuper + x_off[v]))
                            : make_uint4(0, 0, 0, 0);
        // x to f16 pairs in place: the B fragments of every row tile.
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int v = 0; v < kXVecs; ++v) {
        uint4& r = xv[j][v];
        r = make_uint4(f16_pair(r.x), f16_pair(r.y), f16_pair(r.z), f16_pair(r.w));
      }
    F::template block_product<NT>(rows[0], rows[1], xv, acc, t);
  }

#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) partial[warp][j * 4 + e][lane] = acc[j][e];
  __syncthreads();
  for (int i = threadIdx.x; i < E * 32; i += kWarps * 32) {
    const int l = i % 32, a = i / 32;
    const int j = a / 4, e = a % 4;
    float v = 0.f;
#pragma unroll
    for (int ww = 0; ww < kWarps; ++ww) v += partial[ww][a][l];
    // Accumulator e of lane l: row l / 4 (+8 for e >= 2), token 8j + 2(l % 4) + (e & 1).
    const int n = n0 + l / 4 + (e >= 2 ? 8 : 0);
    const int m = 8 * j + 2 * (l % 4) + (e & 1);
    if (n < N && m < M) y[static_cast<size_t>(m) * N + n] = from_f32<Ty>(v + (bias ? bias[n] : 0.f));
  }
}

template <class F, int NT>
void launch_tiles(const void* x, const void* w, const float* bias, DType y_t, void* y, int M, int N, int K,
                  cudaStream_t s) {
  const unsigned grid = static_cast<unsigned>((N + 15) / 16);
  auto xb = static_cast<const bf16*>(x);
  auto wb = static_cast<const uint8_t*>(w);
  const bool dependent = M == 1;
  if (y_t == DType::BF16)
    launch_kernel(dependent, qmma_kernel<F, bf16, NT>, dim3(grid), dim3(kWarps * 32), 0, s, xb, wb, bias,
                  static_cast<bf16*>(y), M, N, K);
  else
    launch_kernel(dependent, qmma_kernel<F, float, NT>, dim3(grid), dim3(kWarps * 32), 0, s, xb, wb, bias,
                  static_cast<float*>(y), M, N, K);
}

}  // namespace

bool qmma_supports(DType w_t) {
  return w_t == DType::Q4_K || w_t == DType::Q6_K;
}

void launch_qmma(const void* x, DType w_t, const void* w, const float* bias, DType y_t, void* y, int M, int N, int K,
                 cudaStream_t s) {
  if (M == 0 || N == 0) return;
  if (!qmma_supports(w_t) || K % kSuper != 0 || M > kQmmaMaxM)
    throw std::invalid_argument("launch_qmma: Q4_K or Q6_K weights, K % 256 == 0 and at most 16 rows");
  if (w_t == DType::Q4_K)
    M > 8 ? launch_tiles<Q4K, 2>(x, w, bias, y_t, y, M, N, K, s) : launch_tiles<Q4K, 1>(x, w, bias, y_t, y, M, N, K, s);
  else
    M > 8 ? launch_tiles<Q6K, 2>(x, w, bias, y_t, y, M, N, K, s) : launch_tiles<Q6K, 1>(x, w, bias, y_t, y, M, N, K, s);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace kestrel::backends::cuda
