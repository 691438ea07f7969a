// Split-KV decode attention over code pages (--kv-type fp8, int8, int4, int2: core/kv_codec.h), the
// bf16 kernel's structure (attention_decode.cu) with the compressed bytes streamed instead: each of a wide
// block's 8 warps copies its own stages of K/V codes and their per-group params into a private 3-stage
// cp.async ring. For each 16 keys every lane then reads only the code bytes its MMA fragments need and
// decodes them in registers straight into the B operands (S = Q K^T, O += P V; f16 in, f32 accumulate):
// no f16 tile and no ldmatrix round trip through shared memory, ~2 integer/half2 ops per element (Frag
// says which lane holds what). Q's dims are permuted to match K's unpack order; V's output columns are
// put back in order by the merge. (attention_codes.cuh says why f16.) Q is pre-scaled by the softmax
// scale (and log2 e) and clamped to f16's range before its conversion.
#include <algorithm>

#include "backends/cuda/attention_codes.cuh"
#include "backends/cuda/attention_decode.cuh"
#include "backends/cuda/common.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/mma.cuh"
#include "core/kv_codec.h"

namespace kestrel::backends::cuda {
namespace {

using namespace decode;
using quant::KvCode;

constexpr int kSlotBytes = kCodeSlotBytes;            // 2 stages in flight per warp
constexpr int kMaxKeysPerWarp = kCodeMaxKeysPerWarp;  // the copies' row table holds 4 per lane
constexpr int kTileKeys = 16;                         // keys multiplied at once: the k of the P V MMA

constexpr size_t codes_smem_bytes() {
  return size_t{kWideStages} * kWideWarps * kSlotBytes;
}

struct CodeDims {
  int kw;     // keys per warp stage (a multiple of kTileKeys)
  int pb;     // param bytes per row (one token, one KV head): groups * P halves; 4, 8 or 16, one copy
  int group;  // elements per scale group: at least head_dim / 4 (decode_codes_decline)
};

// Fragment geometry over a [keys][D] code tile (mma.cuh's m16n8k16 layouts; lane = 4 g + t):
// - S = Q K^T: lane (g, t) decodes keys g and 8 + g, dims [t D/4, (t + 1) D/4) — one contiguous run of
//   code bytes and one scale group per key — in decode_word's pair order, and Q's dims are permuted alike.
// - O += P V: lane (g, t) decodes keys 2t, 2t + 1, 2t + 8, 2t + 9, dims [g D/8, (g + 1) D/8), as (key,
//   key + 1) pairs of one dim (decode_key_pair); output tile j's column n is dim n D/8 + j, put back in
//   order by merge_and_store.
template <int D, KvCode C>
struct Frag {
  static constexpr int kSpanK = D / 4, kSpanV = D / 8;  // dims per lane
  static constexpr int kBytesK = kSpanK * code_bits(C) / 8, kBytesV = kSpanV * code_bits(C) / 8;
  static constexpr int kWordsK = kBytesK / 4, kWordsV = kBytesV < 4 ? 1 : kBytesV / 4;
  static constexpr int kPairsPerWord = kWordElems<C> / 2;
};

// Q's A fragments for the permuted dims: pair P of lane t's span (word P / kPairsPerWord, pair P % ..)
// holds the two dims its K pair holds; rows g and g + 8 (zero past nh), times the softmax scale (log2 e
// folded in), clamped to f16.
template <int D, KvCode C>
__device__ __forceinline__ void load_q_permuted(uint32_t (&qf)[D / 16][4], const bf16* q, int nh, float scale,
                                                int lane) {
  using F = Frag<D, C>;
  const int g = lane / 4, t = lane % 4;
  float v[2][F::kSpanK];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = g + 8 * h;
#pragma unroll
    for (int c = 0; c < F::kSpanK / 8; ++c) {
      uint4 raw = {};
      if (r < nh) raw = *reinterpret_cast<const uint4*>(q + r * D + t * F::kSpanK + 8 * c);
      const __nv_bfloat162* b = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 f = __bfloat1622float2(b[i]);
        v[h][8 * c + 2 * i] = fminf(fmaxf(f.x * scale, -65504.f), 65504.f);
        v[h][8 * c + 2 * i + 1] = fminf(fmaxf(f.y * scale, -65504.f), 65504.f);
      }
    }
  }
  auto pair = [&](int h, int pi) {
    const int base = pi / F::kPairsPerWord * kWordElems<C>, p = pi % F::kPairsPerWord;
    return pack_f16(v[h][base + word_pair_elem<C>(p, 0)], v[h][base + word_pair_elem<C>(p, 1)]);
  };
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    qf[kk][0] = pair(0, 2 * kk);
    qf[kk][1] = pair(1, 2 * kk);
    qf[kk][2] = pair(0, 2 * kk + 1);
    qf[kk][3] = pair(1, 2 * kk + 1);
  }
}

template <int D, KvCode C>
__global__ void __launch_bounds__(kWideWarps * 32)
    decode_codes_kernel(const AttentionLaunch a, const DecodeDims dd, const CodeDims cd, float* part_o, float* part_lse,
                        int* counters) {
  using F = Frag<D, C>;
  constexpr int W = kWideWarps, S = kWideStages;
  constexpr int RB = quant::kv_row_bytes(C, D);  // code bytes per row
  constexpr int CPR = RB / 16;                   // 16-byte copies per code row
  constexpr int PB = quant::kv_params(C) * 2;    // bytes of one group's params
  extern __shared__ __align__(128) unsigned char smem[];
  unsigned char* ring = smem;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int split = blockIdx.x;
  const int kvh = blockIdx.y / dd.head_chunks, hc = blockIdx.y % dd.head_chunks;
  const int seq = blockIdx.z;
  const int KW = cd.kw, KS = W * KW;
  const int* table = a.block_tables + static_cast<size_t>(seq) * a.max_blocks;

  const SplitRange sr = split_range(a, dd, seq, split, KS);
  if (!sr.ok) {
    pdl_wait();
    return;
  }
  const int q_row = sr.q_row, n_splits = sr.n_splits, k_begin = sr.k_begin, k_end = sr.k_end, n_stages = sr.n_stages;

  // Lane l holds the table entry of the l-th block a stage's rows touch (code_keys_per_warp keeps them
  // within 32), so the copies find theirs by a shuffle.
  auto fetch = [&](int stage) {
    const int b = fast_div(dd.bs, k_begin + stage * KS + warp * KW) + lane;
    return __ldg(table + min(b, a.max_blocks - 1));
  };
  const unsigned char* kc = static_cast<const unsigned char*>(a.k_cache);
  const unsigned char* vc = static_cast<const unsigned char*>(a.v_cache);
  const unsigned char* kp = static_cast<const unsigned char*>(a.k_params);
  const unsigned char* vp = static_cast<const unsigned char*>(a.v_params);
  const int n_code = KW * CPR;
  // Slot layout: K codes [KW][RB], V codes, K params [KW][pb], V params. Lane l finds the cache row of
  // stage rows l, l + 32, ... once; the code copies then run chunk-major (consecutive lanes copy consecutive
  // 16 bytes of a row, so a warp's copies cover whole rows) and take their row from its lane by a shuffle.
  // Every loop runs as often in every lane, so the shuffles are converged.
  auto issue = [&](int stage, int ent) {
    unsigned char* slot = ring + ((stage % S) * W + warp) * kSlotBytes;
    const int key0 = k_begin + stage * KS + warp * KW;
    const int blk0 = fast_div(dd.bs, key0);
    int rows[kMaxKeysPerWarp / 32];  // cache row of stage row lane + 32 i; -1 past the split
#pragma unroll
    for (int i = 0; i < kMaxKeysPerWarp / 32; ++i) {
      const int p = key0 + lane + 32 * i, b = fast_div(dd.bs, p);
      const int e = __shfl_sync(0xffffffffu, ent, (b - blk0) & 31);
      rows[i] = lane + 32 * i < KW && p < k_end ? (e * dd.bs.d + (p - b * dd.bs.d)) * a.n_kv_heads + kvh : -1;
    }
#pragma unroll
    for (int i = 0; i < kMaxKeysPerWarp * CPR / 32; ++i) {
      if (32 * i >= n_code) break;
      const int c = lane + 32 * i;
      const int row = __shfl_sync(0xffffffffu, rows[i / CPR], c / CPR % 32);
      const size_t off = row < 0 ? 0 : static_cast<size_t>(row) * RB + c % CPR * 16;
      const uint32_t dst = smem_addr(slot + c * 16);
      cp_async16(dst, kc + off, row >= 0);
      cp_async16(dst + n_code * 16, vc + off, row >= 0);
    }
    const uint32_t par = smem_addr(slot + 2 * n_code * 16);
#pragma unroll
    for (int i = 0; i < kMaxKeysPerWarp / 32; ++i) {
      const int r = lane + 32 * i;
      if (r >= KW) break;
      const size_t off = rows[i] < 0 ? 0 : static_cast<size_t>(rows[i]) * cd.pb;
      cp_async_n(par + r * cd.pb, kp + off, cd.pb, rows[i] >= 0);
      cp_async_n(par + (KW + r) * cd.pb, vp + off, cd.pb, rows[i] >= 0);
    }
  };
  int ent_pro[S];
#pragma unroll
  for (int st = 0; st < S; ++st) ent_pro[st] = fetch(st);

  pdl_wait();  // q and the pages are written by the kernels before this one
  pdl_launch_dependents();

  const int h0 = kvh * dd.group + hc * kRows;
  const int nh = min(kRows, dd.group - hc * kRows);
#pragma unroll
  for (int st = 0; st < S - 1; ++st) {
    if (st < n_stages) issue(st, ent_pro[st]);
    cp_async_commit();  // empty groups keep the wait counts uniform
  }
  int ent = ent_pro[S - 1];
  uint32_t qf[D / 16][4];
  load_q_permuted<D, C>(qf, static_cast<const bf16*>(a.q) + (static_cast<size_t>(q_row) * a.n_heads + h0) * D, nh,
                        a.scale * 1.4426950408889634f, lane);
  float o[D / 8][4], m_run[2], l_run[2];
  clear_running<D>(o, m_run, l_run);
  // This lane's param offsets within a row: its K span's group and its V span's.
  const int k_par_off = t * F::kSpanK / cd.group * PB, v_par_off = g * F::kSpanV / cd.group * PB;

  for (int j = 0; j < n_stages; ++j) {
    __syncwarp();  // the slot refilled below was read by this warp last iteration
    if (j + S - 1 < n_stages) {
      issue(j + S - 1, ent);
      if (j + S < n_stages) ent = fetch(j + S);
    }
    cp_async_commit();
    cp_async_wait<S - 1>();
    __syncwarp();  // every lane's copies of stage j are visible to the whole warp
    const int key0 = k_begin + j * KS + warp * KW;
    const unsigned char* slot = ring + ((j % S) * W + warp) * kSlotBytes;
    const unsigned char* v_codes = slot + n_code * 16;
    const unsigned char* k_par = slot + 2 * n_code * 16;
    const unsigned char* v_par = k_par + KW * cd.pb;
    for (int t0 = 0; t0 < KW && key0 + t0 < k_end; t0 += kTileKeys) {
      float s[2][4] = {};
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const int r = t0 + 8 * nt + g;
        uint32_t w[F::kWordsK];
        load_words<F::kBytesK>(slot + r * RB + t * F::kBytesK, w);
        const __half2 dm = load_dm<C>(k_par + r * cd.pb + k_par_off);
        uint32_t b[D / 8];
#pragma unroll
        for (int i = 0; i < F::kWordsK; ++i) decode_word<C>(w[i], dm, b + i * F::kPairsPerWord);
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) mma_f16_16816(s[nt], qf[kk], b[2 * kk], b[2 * kk + 1]);
      }
      const int kb = key0 + t0;
      if (kb + kTileKeys > k_end) {
#pragma unroll
        for (int nt = 0; nt < 2; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            if (kb + nt * 8 + 2 * t + (e & 1) >= k_end) s[nt][e] = -INFINITY;
      }
      softmax_step(s, m_run, l_run, o, 1.f);  // Q carries the scale
      const uint32_t p[4] = {pack_f16(s[0][0], s[0][1]), pack_f16(s[0][2], s[0][3]), pack_f16(s[1][0], s[1][1]),
                             pack_f16(s[1][2], s[1][3])};
      uint32_t vb[2][F::kSpanV];  // (keys 2t, 2t + 1), (keys 2t + 8, 2t + 9): one pair per output tile
#pragma unroll
      for (int kp2 = 0; kp2 < 2; ++kp2) {
        const int ra = t0 + 8 * kp2 + 2 * t;
        uint32_t wa[F::kWordsV], wb[F::kWordsV];
        load_words<F::kBytesV>(v_codes + ra * RB + g * F::kBytesV, wa);
        load_words<F::kBytesV>(v_codes + (ra + 1) * RB + g * F::kBytesV, wb);
        const __half2 dma = load_dm<C>(v_par + ra * cd.pb + v_par_off);
        const __half2 dmb = load_dm<C>(v_par + (ra + 1) * cd.pb + v_par_off);
#pragma unroll
        for (int i = 0; i < F::kWordsV; ++i) {
          uint32_t pairs[kWordElems<C>];
          decode_key_pair<C>(wa[i], wb[i], dma, dmb, pairs);
#pragma unroll
          for (int x = 0; x < kWordElems<C> && i * kWordElems<C> + x < F::kSpanV; ++x)
            vb[kp2][i * kWordElems<C> + x] = pairs[x];
        }
      }
#pragma unroll
      for (int jt = 0; jt < D / 8; ++jt) mma_f16_16816(o[jt], p, vb[0][jt], vb[1][jt]);
    }
  }
  cp_async_wait<0>();
  merge_and_store<D, W, true>(a, dd, MergeTarget{seq, kvh, hc, split, n_splits, q_row, h0, nh}, o, m_run, l_run, smem,
                              part_o, part_lse, counters);
}

// Param bytes per head row of a's code pages (a.kv_t is a code type: decode_codes_decline checked it).
int param_bytes(const AttentionLaunch& a) {
  KvCode c{};
  quant::kv_code_of(a.kv_t, &c);
  return param_row_bytes(c, a.head_dim, a.kv_group);
}

template <int D, KvCode C>
void launch_typed(const AttentionLaunch& a, const DecodePlan& plan, void* workspace, int* counters, cudaStream_t s) {
  constexpr size_t smem = codes_smem_bytes();
  static_assert(smem <= kSmemPerSm, "the ring, tiles and Q fit one SM");
  static const bool configured = [] {
    CUDA_CHECK(cudaFuncSetAttribute(decode_codes_kernel<D, C>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    return true;
  }();
  (void)configured;
  const DecodeDims dd = decode_dims(a, plan);
  const int pb = param_bytes(a);
  const CodeDims cd{plan.keys_per_warp, pb, a.kv_group};
  const dim3 grid(plan.splits, a.n_kv_heads * plan.head_chunks, a.n_seqs);
  launch_dependent(decode_codes_kernel<D, C>, grid, dim3(kWideWarps * 32), smem, s, a, dd, cd,
                   static_cast<float*>(workspace), partial_lse(a, plan.splits, workspace), counters);
}

template <int D>
void launch_for(const AttentionLaunch& a, const DecodePlan& plan, void* workspace, int* counters, cudaStream_t s) {
  switch (a.kv_t) {
    case DType::F8E4M3: return launch_typed<D, KvCode::Fp8>(a, plan, workspace, counters, s);
    case DType::U8: return launch_typed<D, KvCode::U8>(a, plan, workspace, counters, s);
    case DType::U4: return launch_typed<D, KvCode::U4>(a, plan, workspace, counters, s);
    default: return launch_typed<D, KvCode::U2>(a, plan, workspace, counters, s);
  }
}

}  // namespace

const char* decode_codes_decline(DType kv_t, int head_dim, int group, int block_size) {
  KvCode code;
  if (!quant::kv_code_of(kv_t, &code)) return "code pages of fp8, u8, u4 or u2";
  if (head_dim != 64 && head_dim != 128) return "head_dim must be 64 or 128";
  if (group <= 0 || group % 8 || head_dim % group) return "scale groups must be multiples of 8 that divide head_dim";
  if (group < head_dim / 4) return "scale groups must span at least a quarter of head_dim (a lane holds one group)";
  const int pb = param_row_bytes(code, head_dim, group);
  if (pb != 4 && pb != 8 && pb != 16)
    return "a row's params must take 4, 8 or 16 bytes (fp8 at head_dim 64 has one 2-byte scale)";
  if (block_size < 1) return "block_size must be positive";
  return nullptr;
}

double code_bytes_per_key(const AttentionLaunch& a) {
  KvCode c{};
  quant::kv_code_of(a.kv_t, &c);
  return 2.0 * (quant::kv_row_bytes(c, a.head_dim) + param_bytes(a));
}

int code_keys_per_warp(const AttentionLaunch& a, int cap) {
  const double per_key = code_bytes_per_key(a);
  auto fits = [&](int kw) {
    return kw * per_key <= kSlotBytes && kw <= kMaxKeysPerWarp && (kw - 1) / a.block_size + 2 <= 32 &&
           (cap == 0 || cap % kw == 0);
  };
  int kw = kTileKeys;
  while (fits(2 * kw)) kw *= 2;
  return kw;
}

void launch_decode_codes(const AttentionLaunch& a, const DecodePlan& plan, void* workspace, int* counters,
                         cudaStream_t s) {
  a.head_dim == 128 ? launch_for<128>(a, plan, workspace, counters, s)
                    : launch_for<64>(a, plan, workspace, counters, s);
}

}  // namespace kestrel::backends::cuda
