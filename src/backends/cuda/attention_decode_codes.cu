// Split-KV decode attention over code pages (--kv-type fp8, int8, int4, int2: core/kv_codec.h), the
// bf16 kernel's structure (attention_decode.cu) with the compressed bytes streamed instead: each of a wide
// block's 8 warps copies its own stages of K/V codes and their per-group params into a private 3-stage
// cp.async ring, then, 16 keys at a time, decodes them in registers into a small f16 tile (K and V) that
// the tensor-core MMAs read as the bf16 kernel reads its pages (S = Q K^T, O += P V; f16 in, f32
// accumulate). The memory time shrinks with the format's bytes; the decode costs ~2 integer/half2 ops per
// element, which the SM hides under the stream up to the 2-bit formats' ~5x compression.
// (attention_codes.cuh says why f16.) Q is pre-scaled by the softmax scale (and log2 e) and clamped to
// f16's range before its conversion.
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

constexpr int kSlotBytes = 6144;  // codes + params of one warp's stage: 2 of them in flight per warp
constexpr int kTileKeys = 16;     // keys decoded and multiplied at once

template <int D>
constexpr size_t codes_smem_bytes() {
  // ring, then per warp a K and a V tile of kTileKeys x D halves, then the Q tile
  return size_t{kWideStages} * kWideWarps * kSlotBytes + sizeof(__half) * (kWideWarps * 2 * kTileKeys + kRows) * D;
}

struct CodeDims {
  int kw;     // keys per warp stage (a multiple of kTileKeys)
  int pb;     // param bytes per row (one token, one KV head): groups * P halves
  int unit;   // bytes per param copy: pb up to 16
  int group;  // elements per scale group
};

// Decodes elements 8 ch .. 8 ch + 7 of one row (codes: the row's first byte; params: its first group's)
// into 8 halves at dst.
template <KvCode C>
__device__ __forceinline__ void decode_chunk(const unsigned char* codes, const unsigned char* params, int ch, int group,
                                             __half* dst) {
  const unsigned char* p = params + ch * 8 / group * quant::kv_params(C) * 2;
  *reinterpret_cast<uint4*>(dst) = decode8<C>(load_codes8<C>(codes + ch * 8 * code_bits(C) / 8), load_dm<C>(p));
}

template <int D, KvCode C>
__global__ void __launch_bounds__(kWideWarps * 32)
    decode_codes_kernel(const AttentionLaunch a, const DecodeDims dd, const CodeDims cd, float* part_o, float* part_lse,
                        int* counters) {
  constexpr int W = kWideWarps, S = kWideStages;
  constexpr int CH = D / 8;                      // 8-element chunks per row
  constexpr int RB = quant::kv_row_bytes(C, D);  // code bytes per row
  constexpr int CPR = RB / 16;                   // 16-byte copies per code row
  extern __shared__ __align__(128) unsigned char smem[];
  unsigned char* ring = smem;
  __half* tiles = reinterpret_cast<__half*>(smem + size_t{S} * W * kSlotBytes);
  __half* q_s = tiles + W * 2 * kTileKeys * D;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
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
  const int n_code = KW * CPR, upr = cd.pb / cd.unit, n_par = KW * upr;
  // Slot layout: K codes [KW][RB], V codes, K params [KW][pb], V params. The loops below run the same
  // number of times in every lane (2 * KW * CPR and 2 * KW * upr are multiples of 32), so the shuffles
  // are converged.
  auto issue = [&](int stage, int ent) {
    unsigned char* slot = ring + ((stage % S) * W + warp) * kSlotBytes;
    const int key0 = k_begin + stage * KS + warp * KW;
    const int blk0 = fast_div(dd.bs, key0);
    auto slot_of = [&](int r, bool* valid) {  // cache slot of row r of this stage
      const int p = key0 + r, b = fast_div(dd.bs, p);
      const int e = __shfl_sync(0xffffffffu, ent, (b - blk0) & 31);
      *valid = p < k_end;
      return (static_cast<size_t>(e) * dd.bs.d + (p - b * dd.bs.d)) * a.n_kv_heads + kvh;
    };
    for (int c = lane; c < 2 * n_code; c += 32) {
      const bool is_v = c >= n_code;
      const int cc = is_v ? c - n_code : c;
      bool valid;
      const size_t row = slot_of(cc / CPR, &valid);
      const unsigned char* src = (is_v ? vc : kc) + (valid ? row * RB + (cc % CPR) * 16 : 0);
      cp_async16(smem_addr(slot + (is_v ? n_code * 16 : 0) + cc * 16), src, valid);
    }
    unsigned char* par = slot + 2 * n_code * 16;
    for (int c = lane; c < 2 * n_par; c += 32) {
      const bool is_v = c >= n_par;
      const int cc = is_v ? c - n_par : c;
      bool valid;
      const size_t row = slot_of(cc / upr, &valid);
      const unsigned char* src = (is_v ? vp : kp) + (valid ? row * cd.pb + (cc % upr) * cd.unit : 0);
      cp_async_n(smem_addr(par + (is_v ? n_par * cd.unit : 0) + cc * cd.unit), src, cd.unit, valid);
    }
  };
  int ent_pro[S];
#pragma unroll
  for (int st = 0; st < S; ++st) ent_pro[st] = fetch(st);

  pdl_wait();  // q and the pages are written by the kernels before this one
  pdl_launch_dependents();

  const int h0 = kvh * dd.group + hc * kRows;
  const int nh = min(kRows, dd.group - hc * kRows);
  {
    const bf16* q = static_cast<const bf16*>(a.q) + (static_cast<size_t>(q_row) * a.n_heads + h0) * D;
    const float qs = a.scale * 1.4426950408889634f;
    for (int c = tid; c < kRows * CH; c += W * 32) {
      const int r = c / CH, cc = c % CH;
      *reinterpret_cast<uint4*>(q_s + swizzle<D>(r, cc)) = r < nh ? scaled_f16x8(q + r * D + cc * 8, qs) : uint4{};
    }
  }
#pragma unroll
  for (int st = 0; st < S - 1; ++st) {
    if (st < n_stages) issue(st, ent_pro[st]);
    cp_async_commit();  // empty groups keep the wait counts uniform
  }
  int ent = ent_pro[S - 1];
  __syncthreads();  // the Q tile
  uint32_t qf[D / 16][4];
  load_q_fragments<D>(qf, q_s, lane);
  float o[D / 8][4], m_run[2], l_run[2];
  clear_running<D>(o, m_run, l_run);
  __half* kt = tiles + warp * 2 * kTileKeys * D;
  __half* vt = kt + kTileKeys * D;

  for (int j = 0; j < n_stages; ++j) {
    __syncwarp();  // the slot refilled below was decoded by this warp last iteration
    if (j + S - 1 < n_stages) {
      issue(j + S - 1, ent);
      if (j + S < n_stages) ent = fetch(j + S);
    }
    cp_async_commit();
    cp_async_wait<S - 1>();
    __syncwarp();  // every lane's copies of stage j are visible to the whole warp
    const int key0 = k_begin + j * KS + warp * KW;
    const unsigned char* slot = ring + ((j % S) * W + warp) * kSlotBytes;
    const unsigned char* k_par = slot + 2 * n_code * 16;
    const unsigned char* v_par = k_par + n_par * cd.unit;
    for (int t0 = 0; t0 < KW && key0 + t0 < k_end; t0 += kTileKeys) {
#pragma unroll
      for (int i = 0; i < kTileKeys * CH / 32; ++i) {
        const int idx = lane + 32 * i, r = idx / CH, ch = idx % CH;
        decode_chunk<C>(slot + (t0 + r) * RB, k_par + (t0 + r) * cd.pb, ch, cd.group, kt + swizzle<D>(r, ch));
        decode_chunk<C>(slot + (n_code * 16) + (t0 + r) * RB, v_par + (t0 + r) * cd.pb, ch, cd.group,
                        vt + swizzle<D>(r, ch));
      }
      __syncwarp();
      float s[2][4] = {};
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t b[4];
        ldmatrix_x4(b, smem_addr(kt + swizzle<D>((lane % 8) + (lane / 16) * 8, kk * 2 + (lane / 8) % 2)));
        mma_f16_16816(s[0], qf[kk], b[0], b[1]);
        mma_f16_16816(s[1], qf[kk], b[2], b[3]);
      }
      const int kb = key0 + t0;
      if (kb + kTileKeys > k_end) {
#pragma unroll
        for (int nt = 0; nt < 2; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            if (kb + nt * 8 + 2 * (lane % 4) + (e & 1) >= k_end) s[nt][e] = -INFINITY;
      }
      softmax_step(s, m_run, l_run, o, 1.f);  // Q carries the scale
      const uint32_t p[4] = {pack_f16(s[0][0], s[0][1]), pack_f16(s[0][2], s[0][3]), pack_f16(s[1][0], s[1][1]),
                             pack_f16(s[1][2], s[1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, smem_addr(vt + swizzle<D>((lane % 8) + ((lane / 8) % 2) * 8, dp * 2 + lane / 16)));
        mma_f16_16816(o[2 * dp], p, b[0], b[1]);
        mma_f16_16816(o[2 * dp + 1], p, b[2], b[3]);
      }
      __syncwarp();  // the tiles are decoded again for the next 16 keys
    }
  }
  cp_async_wait<0>();
  merge_and_store<D, W>(a, dd, MergeTarget{seq, kvh, hc, split, n_splits, q_row, h0, nh}, o, m_run, l_run, smem, part_o,
                        part_lse, counters);
}

// Param bytes per head row of a's code pages (a.kv_t is a code type: decode_codes_decline checked it).
int param_bytes(const AttentionLaunch& a) {
  KvCode c{};
  quant::kv_code_of(a.kv_t, &c);
  return param_row_bytes(c, a.head_dim, a.kv_group);
}

template <int D, KvCode C>
void launch_typed(const AttentionLaunch& a, const DecodePlan& plan, void* workspace, int* counters, cudaStream_t s) {
  constexpr size_t smem = codes_smem_bytes<D>();
  static_assert(smem <= kSmemPerSm, "the ring, tiles and Q fit one SM");
  static const bool configured = [] {
    CUDA_CHECK(cudaFuncSetAttribute(decode_codes_kernel<D, C>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    return true;
  }();
  (void)configured;
  const DecodeDims dd = decode_dims(a, plan);
  const int pb = param_bytes(a);
  const CodeDims cd{plan.keys_per_warp, pb, std::min(pb, 16), a.kv_group};
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
  const int pb = param_row_bytes(code, head_dim, group);
  if (pb % 4 || pb > 32) return "a row's params must take 4 to 32 bytes (fp8 at head_dim 64 has one 2-byte scale)";
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
    return kw * per_key <= kSlotBytes && (kw - 1) / a.block_size + 2 <= 32 && (cap == 0 || cap % kw == 0);
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
