// Split-KV decode attention (one query token per sequence) over the paged bf16 cache. A block owns
// (sequence, KV head, up to 16 of its query heads, KV split); a wide block runs alone on its SM: its 8
// warps each stream their own 16-key (D 128) or 32-key (D 64) slices of K and V through a private
// 3-stage cp.async ring in shared memory, so two stages (128 KB per SM) are in flight from the first
// cycle and no block barrier sits in the loop (narrow 2-warp blocks, 4 per SM, serve many short
// sequences; see kNarrowWarps). It is launched as a programmatic dependent of the cache write before it. The query
// heads that share the KV head are the M = 16 rows of tensor-core MMAs (S = Q K^T, O += P V; bf16 in, f32 accumulate),
// so GQA reads the KV bytes once per group and the math stays far below the memory time. Warps merge in shared memory;
// splits merge in the same launch: the last block of a (sequence, head slice) to finish (an atomic ticket) combines the
// partial outputs by their log-sum-exp, so a decode step is one kernel.
#include <algorithm>
#include <cmath>

#include "backends/cuda/attention_decode.cuh"
#include "backends/cuda/common.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/mma.cuh"

namespace kestrel::backends::cuda {
namespace {

using namespace decode;

// Two shapes of the same kernel (DecodePlan::warps): wide blocks of 8 warps with a 3-stage ring fill an
// SM's shared memory alone and stream long contexts; narrow blocks of 2 warps (52 KB, 4 per SM) serve
// many short sequences, where a wide block's fixed costs (Q tile, first table and K/V round trips,
// merge) would run one per SM in many waves.
constexpr int kNarrowWarps = 2, kNarrowStages = 3;
// Narrow blocks when every sequence fits in this many wide stages and there are at least as many
// (sequence, KV head) units as SMs.
constexpr int kNarrowMaxWideStages = 4;
constexpr int kStageBytes = 8192;  // K + V bytes per warp per stage

template <int D>
constexpr int keys_per_warp() {
  return kStageBytes / (4 * D);  // K and V rows of D bf16 each
}

__host__ __device__ constexpr int keys_per_stage(int head_dim, int warps) {
  return warps * kStageBytes / (4 * head_dim);
}

template <int D, int W, int S>
constexpr size_t decode_smem_bytes() {
  return size_t{S} * W * kStageBytes + sizeof(bf16) * kRows * D;  // K/V ring + Q tile
}

template <int D, int W, int S>
__global__ void __launch_bounds__(W * 32)
    decode_kernel(const AttentionLaunch a, const DecodeDims dd, float* part_o, float* part_lse, int* counters) {
  constexpr int kThreads_ = W * 32;
  constexpr int CH = D / 8;  // 16-byte chunks per row
  constexpr int KW = keys_per_warp<D>();
  constexpr int KS = W * KW;
  constexpr int RP = 32 / CH;  // rows a warp copies per pass
  constexpr int NP = KW / RP;  // rows each lane copies per stage (8)
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* ring = reinterpret_cast<bf16*>(smem);
  bf16* q_s = ring + S * W * 2 * KW * D;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int split = blockIdx.x;
  const int kvh = blockIdx.y / dd.head_chunks, hc = blockIdx.y % dd.head_chunks;
  const int seq = blockIdx.z;
  const int* table = a.block_tables + static_cast<size_t>(seq) * a.max_blocks;
  const int row0 = lane / CH, ch = lane % CH;  // this lane copies rows row0 + RP * i, chunk ch

  // Table entries of the rows this lane copies in stage `stage`. Clamped to the table so a guess past
  // the sequence stays in bounds; rows past kv_len never use their entry.
  auto fetch = [&](int k_begin, int stage, int(&ent)[NP]) {
#pragma unroll
    for (int i = 0; i < NP; ++i) {
      const int p = k_begin + stage * KS + warp * KW + row0 + RP * i;
      ent[i] = __ldg(table + min(fast_div(dd.bs, p), a.max_blocks - 1));
    }
  };
  // Guess the split's range from the planned length, so the table loads overlap the seq_info load.
  int ent_pro[S][NP];  // the S stages the block asks for before its first compute
#pragma unroll
  for (int st = 0; st < S; ++st) fetch(split * dd.chunk_hint, st, ent_pro[st]);

  const SplitRange sr = split_range(a, dd, seq, split, KS);
  if (!sr.ok) {
    pdl_wait();  // launch.cuh's contract: no block exits before its predecessor completes
    return;
  }
  const int q_row = sr.q_row, chunk = sr.chunk, n_splits = sr.n_splits, k_begin = sr.k_begin, k_end = sr.k_end,
            n_stages = sr.n_stages;
  if (chunk != dd.chunk_hint) {  // the sequence is shorter than planned: its splits moved
#pragma unroll
    for (int st = 0; st < S; ++st) fetch(k_begin, st, ent_pro[st]);
  }

  const bf16* kc = static_cast<const bf16*>(a.k_cache);
  const bf16* vc = static_cast<const bf16*>(a.v_cache);
  // Element offset of this lane's 16-byte chunk of key row p (in the split) through its table entry.
  auto row_offset = [&](int p, int entry) {
    const int blk = fast_div(dd.bs, p);
    const size_t slot = static_cast<size_t>(entry) * dd.bs.d + (p - blk * dd.bs.d);
    return (slot * a.n_kv_heads + kvh) * D + ch * 8;
  };
  auto issue = [&](int stage, const int(&ent)[NP]) {
    bf16* ks = ring + ((stage % S) * W + warp) * 2 * KW * D;
    bf16* vs = ks + KW * D;
    const int key0 = k_begin + stage * KS + warp * KW;
#pragma unroll
    for (int i = 0; i < NP; ++i) {
      const int r = row0 + RP * i, p = key0 + r;
      const bool valid = p < k_end;
      const size_t off = valid ? row_offset(p, ent[i]) : 0;
      cp_async16(smem_addr(ks + swizzle<D>(r, ch)), kc + off, valid);  // invalid rows: zero-filled
      cp_async16(smem_addr(vs + swizzle<D>(r, ch)), vc + off, valid);
    }
  };

  // Launched as a programmatic dependent (launch_typed), this block may run while the kernel before it
  // (the step's cache write) finishes. Until pdl_wait() it reads only what that kernel does not write:
  // seq_info and the block table (uploaded by the host), and it asks L2 for the K/V lines of the S stages
  // it loads before its first compute (at 1x8K on the H100: 2 stages 15.1 us, 3 stages 14.8, the whole
  // 256 KB split 15.5, none 16.2) — prefetches only warm L2, which the predecessor's writes update, so the
  // one new row is never read stale. q and every copy into shared memory come after the wait.
#pragma unroll
  for (int st = 0; st < S; ++st) {
    const int key0 = k_begin + st * KS + warp * KW;
#pragma unroll
    for (int i = 0; i < NP; ++i) {
      const int p = key0 + row0 + RP * i;
      if (p < k_end && ch % 8 == 0) {  // one prefetch per 128-byte line
        const size_t off = row_offset(p, ent_pro[st][i]);
        prefetch_l2(kc + off);
        prefetch_l2(vc + off);
      }
    }
  }
  pdl_wait();
  pdl_launch_dependents();

  const int h0 = kvh * dd.group + hc * kRows;
  const int nh = min(kRows, dd.group - hc * kRows);
  {
    const bf16* q = static_cast<const bf16*>(a.q) + (static_cast<size_t>(q_row) * a.n_heads + h0) * D;
    for (int c = tid; c < kRows * CH; c += kThreads_) {
      const int r = c / CH, cc = c % CH;
      cp_async16(smem_addr(q_s + swizzle<D>(r, cc)), q + (r < nh ? r * D + cc * 8 : 0), r < nh);  // zero rows
    }
    cp_async_commit();
  }

#pragma unroll
  for (int st = 0; st < S - 1; ++st) {
    if (st < n_stages) issue(st, ent_pro[st]);
    cp_async_commit();  // empty groups keep the wait counts uniform
  }
  int ent[NP];  // entries of the next stage to issue (S - 1 from the prologue), then loaded one iteration ahead
#pragma unroll
  for (int i = 0; i < NP; ++i) ent[i] = ent_pro[S - 1][i];

  cp_async_wait<S - 1>();  // this thread's part of Q
  __syncthreads();
  uint32_t qf[D / 16][4];
  load_q_fragments<D>(qf, q_s, lane);
  float o[D / 8][4], m_run[2], l_run[2];
  clear_running<D>(o, m_run, l_run);
  const float scale_log2 = a.scale * 1.4426950408889634f;

  for (int j = 0; j < n_stages; ++j) {
    __syncwarp();  // the slot refilled below was read by this warp's ldmatrix last iteration
    if (j + S - 1 < n_stages) {
      issue(j + S - 1, ent);
      if (j + S < n_stages) fetch(k_begin, j + S, ent);
    }
    cp_async_commit();
    cp_async_wait<S - 1>();
    __syncwarp();  // every lane's copies of stage j are visible to the whole warp
    const int key0 = k_begin + j * KS + warp * KW;
    if (key0 >= k_end) continue;  // the split's last stage may leave later warps without keys
    const bf16* ks = ring + ((j % S) * W + warp) * 2 * KW * D;
    const bf16* vs = ks + KW * D;

    float s[KW / 8][4];
#pragma unroll
    for (int i = 0; i < KW / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
#pragma unroll
      for (int np = 0; np < KW / 16; ++np) {
        uint32_t b[4];
        ldmatrix_x4(b, smem_addr(ks + swizzle<D>(np * 16 + (lane % 8) + (lane / 16) * 8, kk * 2 + (lane / 8) % 2)));
        mma_bf16_16816(s[2 * np], qf[kk], b[0], b[1]);
        mma_bf16_16816(s[2 * np + 1], qf[kk], b[2], b[3]);
      }
    if (key0 + KW > k_end) {
#pragma unroll
      for (int nt = 0; nt < KW / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (key0 + nt * 8 + 2 * (lane % 4) + (e & 1) >= k_end) s[nt][e] = -INFINITY;
    }
    softmax_step(s, m_run, l_run, o, scale_log2);
#pragma unroll
    for (int kk = 0; kk < KW / 16; ++kk) {
      const uint32_t p[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                             pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                             pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t b[4];
        ldmatrix_x4_trans(b,
                          smem_addr(vs + swizzle<D>(kk * 16 + (lane % 8) + ((lane / 8) % 2) * 8, dp * 2 + lane / 16)));
        mma_bf16_16816(o[2 * dp], p, b[0], b[1]);
        mma_bf16_16816(o[2 * dp + 1], p, b[2], b[3]);
      }
    }
  }

  // The ring is free once every warp is past its loop (only empty copy groups can still be pending).
  cp_async_wait<0>();
  merge_and_store<D, W>(a, dd, MergeTarget{seq, kvh, hc, split, n_splits, q_row, h0, nh}, o, m_run, l_run, smem, part_o,
                        part_lse, counters);
}

template <int D, int W, int S>
void launch_typed(const AttentionLaunch& a, const DecodePlan& plan, void* workspace, int* counters, cudaStream_t s) {
  constexpr size_t smem = decode_smem_bytes<D, W, S>();
  static const bool configured = [] {
    CUDA_CHECK(cudaFuncSetAttribute(decode_kernel<D, W, S>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    return true;
  }();
  (void)configured;
  const DecodeDims dd = decode_dims(a, plan);
  float* part_o = static_cast<float*>(workspace);
  float* part_lse = partial_lse(a, plan.splits, workspace);
  const dim3 grid(plan.splits, a.n_kv_heads * plan.head_chunks, a.n_seqs);
  launch_dependent(decode_kernel<D, W, S>, grid, dim3(W * 32), smem, s, a, dd, part_o, part_lse, counters);
}

}  // namespace

DecodePlan plan_attention_decode(const AttentionLaunch& a, int max_kv_len, int sms) {
  DecodePlan plan;
  const int group = a.n_heads / a.n_kv_heads;
  plan.head_chunks = (group + kRows - 1) / kRows;
  const int64_t units = int64_t{a.n_seqs} * a.n_kv_heads * plan.head_chunks;
  const int max_len = std::max(max_kv_len, 1);
  // Code pages take wide blocks only: their stages hold more keys, so a short sequence has few of them.
  const bool codes = a.kv_t != DType::BF16;
  const int wide_keys = keys_per_stage(a.head_dim, kWideWarps);
  const bool narrow = !codes && units >= sms && max_len <= kNarrowMaxWideStages * wide_keys;
  plan.warps = narrow ? kNarrowWarps : kWideWarps;
  if (codes) plan.keys_per_warp = code_keys_per_warp(a, 0);
  const int stage_keys = codes ? plan.warps * plan.keys_per_warp : keys_per_stage(a.head_dim, plan.warps);
  const double key_bytes = codes ? code_bytes_per_key(a) : 4.0 * a.head_dim;
  const int stages = (max_len + stage_keys - 1) / stage_keys;
  // Blocks an SM holds at once (shared memory bound): one wide, several narrow.
  const size_t ring = static_cast<size_t>(narrow ? kNarrowStages : kWideStages) * plan.warps * kStageBytes;
  const int per_sm = narrow ? static_cast<int>(kSmemPerSm / (ring + sizeof(bf16) * kRows * a.head_dim)) : 1;
  const int cap = std::max(sms, 1) * std::max(per_sm, 1);
  // Blocks run in waves of `cap`. Time model per split count: a full wave streams at the HBM rate; a
  // short last wave is capped by its blocks' own rate (a bf16 block pulls at most ~2x its fair share: 2
  // stages in flight over the loaded latency; a code-page block, bound by its decode instructions, no more
  // than its share, so idle SMs are lost time); every wave pays a start-up bubble and a split merge one
  // more. Usually this picks one wave (cap / units splits), but it also avoids a last wave of a few lone
  // blocks when units is just above a multiple of cap.
  const double kSmRate = codes ? 1.0 : 2.0;
  constexpr double kBubbleBytes = 32 << 10;  // ~1.4 us at an SM's fair share of HBM
  double best = 0;
  for (int s = 1; s <= std::min(stages, cap); ++s) {
    const int chunk = split_chunk(max_len, s, stage_keys);
    const int n = (max_len + chunk - 1) / chunk;
    const int64_t blocks = units * n, waves = (blocks + cap - 1) / cap;
    const double last = static_cast<double>(blocks - (waves - 1) * cap) / cap;
    const double t = chunk * key_bytes * (waves - 1 + std::max(last, 1 / kSmRate)) + kBubbleBytes * (waves + (n > 1));
    if (s == 1 || t < best) {
      best = t;
      plan.splits = n;
    }
  }
  plan.chunk = split_chunk(max_len, plan.splits, stage_keys);  // what the kernel derives at max_len
  if (plan.splits > 1) {
    plan.workspace = partials_bytes(a, plan.splits);
    plan.counters = a.n_seqs * a.n_kv_heads * plan.head_chunks;
  }
  return plan;
}

DecodePlan plan_attention_decode_fixed(const AttentionLaunch& a, int max_kv_len) {
  static_assert(kFixedSplitKeys % keys_per_stage(64, kNarrowWarps) == 0 &&
                    kFixedSplitKeys % keys_per_stage(128, kNarrowWarps) == 0,
                "fixed splits hold whole stages, so every split starts its stages at the same positions");
  DecodePlan plan;
  plan.head_chunks = (a.n_heads / a.n_kv_heads + kRows - 1) / kRows;
  plan.warps = kNarrowWarps;
  if (a.kv_t != DType::BF16) {  // wide blocks whose stages divide the fixed split
    plan.warps = kWideWarps;
    plan.keys_per_warp = code_keys_per_warp(a, kFixedSplitKeys / kWideWarps);
  }
  plan.fixed_chunk = true;
  plan.chunk = kFixedSplitKeys;
  plan.splits = (std::max(max_kv_len, 1) + kFixedSplitKeys - 1) / kFixedSplitKeys;
  if (plan.splits > 1) {
    plan.workspace = partials_bytes(a, plan.splits);
    plan.counters = a.n_seqs * a.n_kv_heads * plan.head_chunks;
  }
  return plan;
}

void launch_attention_decode(const AttentionLaunch& a, const DecodePlan& plan, void* workspace, int* counters,
                             cudaStream_t s) {
  if (a.n_seqs == 0) return;
  if (a.kv_t != DType::BF16) return launch_decode_codes(a, plan, workspace, counters, s);
  const bool wide = plan.warps == kWideWarps;
  if (a.head_dim == 128)
    wide ? launch_typed<128, kWideWarps, kWideStages>(a, plan, workspace, counters, s)
         : launch_typed<128, kNarrowWarps, kNarrowStages>(a, plan, workspace, counters, s);
  else
    wide ? launch_typed<64, kWideWarps, kWideStages>(a, plan, workspace, counters, s)
         : launch_typed<64, kNarrowWarps, kNarrowStages>(a, plan, workspace, counters, s);
}

}  // namespace kestrel::backends::cuda
