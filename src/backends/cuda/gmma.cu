// Grouped 4-bit weights (GPTQ/AWQ codes, core/linear.h) on tensor cores, for any M: y = x . W^T with the
// weights as the MMA's A operand (16 output channels a tile) and the tokens as B (8 a tile), so a batch of
// one wastes no weight bytes, only idle MMA lanes, and the code rows are read as they are stored.
//
// A lane (g, t) of a warp takes 16 bytes (32 codes, k = 32t .. 32t + 31 of a 128-wide span) of rows g and
// g + 8 of its tile. The k order inside an MMA is free as long as A and B agree, so each 32-bit word of codes
// (8 codes) feeds two k-tiles of 16: pair p of the word (codes p and p + 4, core/int_codes.h's
// code_pair_f16) is k-tile 2(word) + p / 2, elements 2t + 8(p % 2) and + 1; x is taken in the same order.
// The f16 weight is (code - zero) * scale: the subtraction exact (the magic-number pair less 1024 + zero,
// integers), the product rounded once (2^-11; the dequantizing GEMMs round to bf16, 2^-9). x enters in f16
// (exact for bf16 within f16's range, |x| < 65504, as cuda.qmma). A 16-byte load lies in one group (groups of
// a multiple of 32 codes, or one per row), so a lane reads one scale and zero point per row and span.
//
// Two dataflows over the same fragments:
// - gmma_split (M <= 16): bound by the code stream. A warp owns 16 channels and a slice of K, with x read
//   straight into registers and spans kept in flight in registers; the slices meet in a scratch.
// - gmma_large (M > 16): a block owns 16 * RW channels per warp and 8 * TN tokens; x is staged once per span
//   in shared memory in the fragments' order (f16, double-buffered) and read by ldmatrix, so every decoded
//   weight feeds TN MMAs, while the next span's codes and x are in flight.
#include <cuda_fp16.h>

#include <algorithm>
#include <stdexcept>

#include "backends/cuda/common.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/mma.cuh"
#include "core/int_codes.h"

namespace kestrel::backends::cuda {
namespace {

constexpr int kSpan = 128;      // k of one span: 4 lanes x 32 codes
constexpr int kSplitWarps = 4;  // gmma_split: warps a block (each its own tile and slice)
constexpr int kLargeWarps = 4;  // gmma_large: warps splitting the block's channels
constexpr int kPad = 8;         // f16 after each staged x row: rows 16 bytes off the bank pattern

// x elements e and e + 4 (e = 0..3) of 8 consecutive bf16 (words v0..v3) as the f16 pair matching code
// pair e of a word.
__device__ __forceinline__ uint32_t x_pair(const uint32_t (&v)[4], int e) {
  return f16_pair(__byte_perm(v[e / 2], v[2 + e / 2], e % 2 ? 0x7632u : 0x5410u));
}

// A channel's group parameters for the 32 codes a lane holds, as loaded (f16 scale and zero point; the
// kernels load them with the codes, a span ahead, and convert them where they use them: a conversion next to
// its load would wait for it), and as the decode uses them: {1024 + zero} and {scale}, f16 pairs.
struct GroupRaw {
  __half scale, zero;
};
struct Group {
  __half2 zero, scale;
};
__device__ __forceinline__ GroupRaw load_group(const GroupedWeight& w, int row, int k) {
  const int g = w.groups == 1 ? 0 : k / w.group_size;
  const size_t at = static_cast<size_t>(row) * w.groups + g;
  const __half zero = w.zeros ? static_cast<const __half*>(w.zeros)[at] : __float2half(8.f);  // symmetric: 2^(4-1)
  return {static_cast<const __half*>(w.scales)[at], zero};
}
__device__ __forceinline__ Group group_of(const GroupRaw& r) {
  return {__half2half2(__hadd(r.zero, __float2half(1024.f))), __half2half2(r.scale)};
}

// Code pair p (codes p, p + 4) of a word as f16 weights (code - zero) * scale.
__device__ __forceinline__ uint32_t weight_pair(uint32_t w, int p, const Group& gr) {
  return u32(__hmul2(__hsub2(h2(code_pair_f16(w, 4, p)), gr.zero), gr.scale));
}

// The A fragment of k-tile 2 * wi + half (wi: the word of the lane's 16 bytes) from rows g (c0) and g + 8.
__device__ __forceinline__ void a_fragment(const uint4& c0, const uint4& c1, const Group& g0, const Group& g1, int wi,
                                           int half, uint32_t (&a)[4]) {
  const uint32_t w0 = word(c0, wi), w1 = word(c1, wi);
  a[0] = weight_pair(w0, 2 * half, g0);
  a[1] = weight_pair(w1, 2 * half, g1);
  a[2] = weight_pair(w0, 2 * half + 1, g0);
  a[3] = weight_pair(w1, 2 * half + 1, g1);
}

// ---- M <= 16 ----

// A warp owns one 16-channel tile and a contiguous slice of its spans (split K): launch_split cuts the K
// axis into as many slices as fill one wave of resident warps, so short matrices still put every SM to work
// and no wave runs part empty. Each lane keeps kStages spans of codes, group parameters and x in registers,
// the loads of span s + kStages issued as span s is multiplied, so the code stream never waits on the
// warp's arithmetic. A tile's slices meet through f32 partials in the scratch: the last warp to arrive
// (an acquire-release ticket) adds them in slice order, so the sum does not depend on which warp finished
// last, and zeroes the ticket for the next launch.
template <int NT>
struct SmallStage {
  uint4 codes[2];  // rows g and g + 8
  GroupRaw groups[2];
  uint32_t x[NT][16];  // 32 bf16 of x per token tile, as loaded
};

template <int NT>
constexpr int small_stages() {
  return NT == 1 ? 3 : 2;  // registers: NT = 2 carries twice the x
}

template <int NT, typename Ty>
__global__ void __launch_bounds__(kSplitWarps * 32)
    gmma_split(const bf16* __restrict__ x, GroupedWeight w, const float* __restrict__ bias, Ty* __restrict__ y,
               GmmaScratch scratch, int M, int N, int K, int splits) {
  constexpr int kStages = small_stages<NT>();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int unit = blockIdx.x * kSplitWarps + warp, tiles = (N + 15) / 16;
  const bool idle = unit >= tiles * splits;
  const int tile = idle ? 0 : unit / splits, split = unit % splits, spans = K / kSpan;
  const int s_begin = static_cast<int>(static_cast<long>(split) * spans / splits);
  const int s_end = idle ? s_begin : static_cast<int>(static_cast<long>(split + 1) * spans / splits);
  const int n0 = tile * 16;
  int row[2];
  const char* code_row[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    row[i] = min(n0 + g + 8 * i, N - 1);  // rows past N read row N - 1 and are never stored
    code_row[i] = static_cast<const char*>(w.codes) + static_cast<size_t>(row[i]) * w.row_bytes + 16 * t;
  }
  const bf16* xr[NT];
  bool has_x[NT];
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    has_x[j] = 8 * j + g < M;
    xr[j] = x + static_cast<size_t>(has_x[j] ? 8 * j + g : 0) * K + 32 * t;
  }
  auto fetch_codes = [&](SmallStage<NT>& st, int s) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      st.codes[i] = load_stream16(code_row[i] + 64 * static_cast<size_t>(s));
      st.groups[i] = load_group(w, row[i], s * kSpan + 32 * t);
    }
  };
  auto fetch_x = [&](SmallStage<NT>& st, int s) {
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const uint4 v = has_x[j] ? __ldg(reinterpret_cast<const uint4*>(xr[j] + static_cast<size_t>(s) * kSpan) + q)
                                 : make_uint4(0, 0, 0, 0);
        st.x[j][4 * q] = v.x, st.x[j][4 * q + 1] = v.y, st.x[j][4 * q + 2] = v.z, st.x[j][4 * q + 3] = v.w;
      }
  };

  // The codes and their groups are no kernel's output: their first spans load before the wait (launch.cuh),
  // x (the previous kernel's output) after it.
  SmallStage<NT> st[kStages];
#pragma unroll
  for (int i = 0; i < kStages; ++i)
    if (s_begin + i < s_end) fetch_codes(st[i], s_begin + i);
  pdl_wait();
  pdl_launch_dependents();
#pragma unroll
  for (int i = 0; i < kStages; ++i)
    if (s_begin + i < s_end) fetch_x(st[i], s_begin + i);

  float acc[NT][4] = {};
  for (int s0 = s_begin; s0 < s_end; s0 += kStages) {
#pragma unroll
    for (int i = 0; i < kStages; ++i) {
      if (s0 + i >= s_end) break;
      const Group g0 = group_of(st[i].groups[0]), g1 = group_of(st[i].groups[1]);
#pragma unroll
      for (int wi = 0; wi < 4; ++wi)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          uint32_t a[4];
          a_fragment(st[i].codes[0], st[i].codes[1], g0, g1, wi, half, a);
#pragma unroll
          for (int j = 0; j < NT; ++j) {
            const uint32_t v[4] = {st[i].x[j][4 * wi], st[i].x[j][4 * wi + 1], st[i].x[j][4 * wi + 2],
                                   st[i].x[j][4 * wi + 3]};
            mma_f16_16816(acc[j], a, x_pair(v, 2 * half), x_pair(v, 2 * half + 1));
          }
        }
      const int next = s0 + i + kStages;
      if (next < s_end) fetch_codes(st[i], next), fetch_x(st[i], next);
    }
  }
  if (idle) return;

  // Accumulator e of lane l: channel l / 4 (+8 for e >= 2), token 8j + 2(l % 4) + (e & 1).
  auto store = [&](const float(&v)[NT][4]) {
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int n = n0 + g + (e >= 2 ? 8 : 0), m = 8 * j + 2 * t + (e & 1);
        if (n < N && m < M) y[static_cast<size_t>(m) * N + n] = from_f32<Ty>(v[j][e] + (bias ? bias[n] : 0.f));
      }
  };
  if (splits == 1) return store(acc);

  // Slices meet: the partials of unit u at [u][4 NT][32], lane-major (coalesced). __syncwarp orders the
  // lanes' stores before lane 0's release; the acquire orders the last warp's loads after every release.
  float* part = scratch.partials + static_cast<size_t>(unit) * (4 * NT * 32);
#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) __stcg(part + (4 * j + e) * 32 + lane, acc[j][e]);
  __syncwarp();
  int last = 0;
  if (lane == 0) {
    int arrived;
    int* ticket = scratch.tickets + tile;
    asm volatile("atom.add.acq_rel.gpu.global.s32 %0, [%1], 1;" : "=r"(arrived) : "l"(ticket) : "memory");
    last = arrived == splits - 1;
    if (last) *ticket = 0;  // every slice has arrived: ready for the next launch
  }
  if (!__shfl_sync(0xffffffffu, last, 0)) return;
  __syncwarp();  // lane 0's acquire before every lane's loads
  float sum[NT][4] = {};
  const float* tile_parts = scratch.partials + static_cast<size_t>(tile) * splits * (4 * NT * 32);
  for (int sp = 0; sp < splits; ++sp)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) sum[j][e] += __ldcg(tile_parts + (sp * 4 * NT + 4 * j + e) * 32 + lane);
  store(sum);
}

// ---- M > 16 ----

template <int TN, int RW, typename Ty>
__global__ void __launch_bounds__(kLargeWarps * 32)
    gmma_large(const bf16* __restrict__ x, GroupedWeight w, const float* __restrict__ bias, Ty* __restrict__ y, int M,
               int N, int K) {
  constexpr int kTokens = 8 * TN, kStride = kSpan + kPad;
  constexpr int kXLoads = kTokens * (kSpan / 8) / (kLargeWarps * 32);  // 16-byte loads of x per thread and span
  static_assert(kXLoads * kLargeWarps * 32 == kTokens * kSpan / 8, "whole 16-byte loads of x per thread");
  // x of a span in the fragments' order: logical element l of k-tile j at 16j + l, that is x at
  // 32t + 8wi + p (+4) (pair p of word wi of lane t's codes) at 32wi + 8p + 2t (+1).
  __shared__ __align__(16) __half xs[2][kTokens][kStride];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int m0 = blockIdx.y * kTokens, n0 = (blockIdx.x * kLargeWarps + warp) * 16 * RW, spans = K / kSpan;

  int row[RW][2];
  const char* code_row[RW][2];
#pragma unroll
  for (int r = 0; r < RW; ++r)
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      row[r][i] = min(n0 + 16 * r + g + 8 * i, N - 1);
      code_row[r][i] = static_cast<const char*>(w.codes) + static_cast<size_t>(row[r][i]) * w.row_bytes + 16 * t;
    }
  // The thread's 16-byte loads of x: token (id / 16), elements 8(id % 16) .. + 7 of the span.
  const bf16* x_src[kXLoads];
  bool x_valid[kXLoads];
  int x_dst[kXLoads];  // token * kStride + 32wi + 2t' (the pairs go to + 8p)
#pragma unroll
  for (int u = 0; u < kXLoads; ++u) {
    const int id = threadIdx.x + u * kLargeWarps * 32, tok = id / 16, q = id % 16;
    x_valid[u] = m0 + tok < M;
    x_src[u] = x + static_cast<size_t>(x_valid[u] ? m0 + tok : 0) * K + 8 * q;
    x_dst[u] = tok * kStride + 32 * (q % 4) + 2 * (q / 4);
  }
  auto load_x = [&](int s, uint4(&v)[kXLoads]) {
#pragma unroll
    for (int u = 0; u < kXLoads; ++u)
      v[u] = x_valid[u] ? __ldg(reinterpret_cast<const uint4*>(x_src[u] + static_cast<size_t>(s) * kSpan))
                        : make_uint4(0, 0, 0, 0);
  };
  auto store_x = [&](int buf, const uint4(&v)[kXLoads]) {
#pragma unroll
    for (int u = 0; u < kXLoads; ++u) {
      const uint32_t vw[4] = {v[u].x, v[u].y, v[u].z, v[u].w};
      __half* dst = &xs[buf][0][0] + x_dst[u];
#pragma unroll
      for (int p = 0; p < 4; ++p) *reinterpret_cast<uint32_t*>(dst + 8 * p) = x_pair(vw, p);
    }
  };
  auto load_codes = [&](int s, uint4(&c)[RW][2], GroupRaw(&gr)[RW][2]) {
#pragma unroll
    for (int r = 0; r < RW; ++r)
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        c[r][i] = load_stream16(code_row[r][i] + 64 * static_cast<size_t>(s));
        gr[r][i] = load_group(w, row[r][i], s * kSpan + 32 * t);
      }
  };

  uint4 xn[kXLoads], cn[RW][2];
  GroupRaw gn[RW][2];
  load_x(0, xn);
  load_codes(0, cn, gn);
  store_x(0, xn);
  __syncthreads();

  // ldmatrix x4 of k-tile j for n-tiles 2nn, 2nn + 1: lane l addresses token 8(2nn + l / 16) + l % 8 at
  // element 16j + 8((l / 8) % 2), so registers 0..3 are b0, b1 of n-tile 2nn and of 2nn + 1.
  const int lm_row = 8 * (lane / 16) + lane % 8, lm_col = 8 * ((lane / 8) % 2);
  float acc[RW][TN][4] = {};
  for (int s = 0; s < spans; ++s) {
    uint4 c[RW][2];
    GroupRaw graw[RW][2];
#pragma unroll
    for (int r = 0; r < RW; ++r)
#pragma unroll
      for (int i = 0; i < 2; ++i) c[r][i] = cn[r][i], graw[r][i] = gn[r][i];
    if (s + 1 < spans) load_x(s + 1, xn), load_codes(s + 1, cn, gn);
    Group gr[RW][2];
#pragma unroll
    for (int r = 0; r < RW; ++r) gr[r][0] = group_of(graw[r][0]), gr[r][1] = group_of(graw[r][1]);
    const uint32_t base = smem_addr(&xs[s % 2][lm_row][lm_col]);
#pragma unroll
    for (int wi = 0; wi < 4; ++wi)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int j = 2 * wi + half;
        uint32_t a[RW][4];
#pragma unroll
        for (int r = 0; r < RW; ++r) a_fragment(c[r][0], c[r][1], gr[r][0], gr[r][1], wi, half, a[r]);
#pragma unroll
        for (int nn = 0; nn < TN / 2; ++nn) {
          uint32_t b[4];
          ldmatrix_x4(b, base + 2 * (16 * nn * kStride + 16 * j));
#pragma unroll
          for (int r = 0; r < RW; ++r) {
            mma_f16_16816(acc[r][2 * nn], a[r], b[0], b[1]);
            mma_f16_16816(acc[r][2 * nn + 1], a[r], b[2], b[3]);
          }
        }
      }
    if (s + 1 < spans) store_x((s + 1) % 2, xn);
    __syncthreads();
  }

#pragma unroll
  for (int r = 0; r < RW; ++r)
#pragma unroll
    for (int j = 0; j < TN; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int n = n0 + 16 * r + g + (e >= 2 ? 8 : 0), m = m0 + 8 * j + 2 * t + (e & 1);
        if (n < N && m < M) y[static_cast<size_t>(m) * N + n] = from_f32<Ty>(acc[r][j][e] + (bias ? bias[n] : 0.f));
      }
}

// Resident blocks of gmma_split<NT> per SM (asked once per instantiation).
template <int NT, typename Ty>
int split_blocks_per_sm() {
  static const int blocks = [] {
    int n = 0;
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, gmma_split<NT, Ty>, kSplitWarps * 32, 0));
    return n > 0 ? n : 1;
  }();
  return blocks;
}

// Slices of K per tile: as many as fill one wave of resident warps, at most one per kMinSliceSpans spans.
int split_count(int N, int K, int warps_resident) {
  constexpr int kMinSliceSpans = 2;
  const int tiles = (N + 15) / 16, spans = K / kSpan;
  return std::clamp(warps_resident / tiles, 1, std::max(1, spans / kMinSliceSpans));
}

template <int NT, typename Ty>
int splits_for(int N, int K, int sms) {
  return split_count(N, K, sms * split_blocks_per_sm<NT, Ty>() * kSplitWarps);
}

template <int NT, typename Ty>
void launch_split(const bf16* x, const GroupedWeight& w, const float* bias, Ty* y, const GmmaScratch& scratch, int M,
                  int N, int K, int sms, cudaStream_t s) {
  const int splits = splits_for<NT, Ty>(N, K, sms);
  const long units = static_cast<long>((N + 15) / 16) * splits;
  if (splits > 1 && (!scratch.partials || !scratch.tickets))
    throw std::invalid_argument("launch_gmma: split K needs the scratch gmma_scratch_size asks for");
  const dim3 grid(static_cast<unsigned>((units + kSplitWarps - 1) / kSplitWarps));
  launch_kernel(M == 1, gmma_split<NT, Ty>, grid, dim3(kSplitWarps * 32), 0, s, x, w, bias, y, scratch, M, N, K,
                splits);
}

template <int NT>
void launch_small(const bf16* x, const GroupedWeight& w, const float* bias, DType y_t, void* y,
                  const GmmaScratch& scratch, int M, int N, int K, int sms, cudaStream_t s) {
  if (y_t == DType::BF16)
    launch_split<NT>(x, w, bias, static_cast<bf16*>(y), scratch, M, N, K, sms, s);
  else
    launch_split<NT>(x, w, bias, static_cast<float*>(y), scratch, M, N, K, sms, s);
}

template <int TN, int RW>
void launch_large(const bf16* x, const GroupedWeight& w, const float* bias, DType y_t, void* y, int M, int N, int K,
                  cudaStream_t s) {
  const dim3 grid((N + kLargeWarps * 16 * RW - 1) / (kLargeWarps * 16 * RW), (M + 8 * TN - 1) / (8 * TN));
  if (y_t == DType::BF16)
    gmma_large<TN, RW, bf16><<<grid, kLargeWarps * 32, 0, s>>>(x, w, bias, static_cast<bf16*>(y), M, N, K);
  else
    gmma_large<TN, RW, float><<<grid, kLargeWarps * 32, 0, s>>>(x, w, bias, static_cast<float*>(y), M, N, K);
}

// Channels per block for M > 16: 128 (two m16 tiles a warp, each staged x fragment feeds both) unless that
// leaves SMs idle, then 64.
template <int TN>
void launch_large_for(const bf16* x, const GroupedWeight& w, const float* bias, DType y_t, void* y, int M, int N, int K,
                      int sms, cudaStream_t s) {
  const long blocks = static_cast<long>((N + 127) / 128) * ((M + 8 * TN - 1) / (8 * TN));
  if (blocks >= sms)
    launch_large<TN, 2>(x, w, bias, y_t, y, M, N, K, s);
  else
    launch_large<TN, 1>(x, w, bias, y_t, y, M, N, K, s);
}

}  // namespace

const char* gmma_decline(DType codes_t, int K, int group_size, int groups, bool act_order) {
  if (codes_t != DType::U4) return "U4 codes only";
  if (act_order) return "act-order (g_idx) weights: the dequantizing GEMMs read g_idx";
  if (K % kSpan != 0) return "K must be a multiple of 128";
  if (groups > 1 && group_size % 32 != 0) return "groups must be a multiple of 32 codes";
  return nullptr;
}

GmmaScratchSize gmma_scratch_size(DType y_t, int M, int N, int K, int sms) {
  if (M == 0 || M > kGmmaSmallM || N == 0) return {};
  const bool one = M <= 8, b = y_t == DType::BF16;
  const int splits = one ? (b ? splits_for<1, bf16>(N, K, sms) : splits_for<1, float>(N, K, sms))
                         : (b ? splits_for<2, bf16>(N, K, sms) : splits_for<2, float>(N, K, sms));
  if (splits == 1) return {};
  const size_t tiles = (N + 15) / 16;
  return {tiles * splits * 4 * (one ? 1 : 2) * 32, tiles};
}

void launch_gmma(const void* x, const GroupedWeight& w, const float* bias, DType y_t, void* y, int M, int N, int K,
                 int sms, const GmmaScratch& scratch, cudaStream_t s) {
  if (M == 0 || N == 0) return;
  if (gmma_decline(w.codes_t, K, w.group_size, w.groups, w.g_idx != nullptr))
    throw std::invalid_argument("launch_gmma: a weight or shape gmma_decline refuses");
  const auto* xb = static_cast<const bf16*>(x);
  if (M <= 8)
    launch_small<1>(xb, w, bias, y_t, y, scratch, M, N, K, sms, s);
  else if (M <= kGmmaSmallM)
    launch_small<2>(xb, w, bias, y_t, y, scratch, M, N, K, sms, s);
  else if (M <= 32)
    launch_large_for<4>(xb, w, bias, y_t, y, M, N, K, sms, s);
  else
    launch_large_for<8>(xb, w, bias, y_t, y, M, N, K, sms, s);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace kestrel::backends::cuda
