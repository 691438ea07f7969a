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

#include "backends/cuda/common.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/mma.cuh"

namespace kestrel::backends::cuda {
namespace {

// Two shapes of the same kernel (DecodePlan::warps): wide blocks of 8 warps with a 3-stage ring fill an
// SM's shared memory alone and stream long contexts; narrow blocks of 2 warps (52 KB, 4 per SM) serve
// many short sequences, where a wide block's fixed costs (Q tile, first table and K/V round trips,
// merge) would run one per SM in many waves.
constexpr int kWideWarps = 8, kWideStages = 3;  // ring depth per warp: stages - 1 load while one is computed
constexpr int kNarrowWarps = 2, kNarrowStages = 3;
// Narrow blocks when every sequence fits in this many wide stages and there are at least as many
// (sequence, KV head) units as SMs.
constexpr int kNarrowMaxWideStages = 4;
constexpr size_t kSmemPerSm = 227 << 10;  // sm_90's shared memory per SM available to blocks
constexpr int kStageBytes = 8192;         // K + V bytes per warp per stage
constexpr int kRows = 16;                 // query heads per block: the M of the m16n8k16 MMAs
constexpr int kMergeBatch = 16;           // split partials the last block loads at once per thread
constexpr int kPad = 8;                   // floats of padding per row of the warp-merge scratch (bank spread)

template <int D>
constexpr int keys_per_warp() {
  return kStageBytes / (4 * D);  // K and V rows of D bf16 each
}

__host__ __device__ constexpr int keys_per_stage(int head_dim, int warps) {
  return warps * kStageBytes / (4 * head_dim);
}

// Keys per split for a sequence of kv_len keys on a grid of `splits` splits: as even as possible, whole
// block stages (so every warp has keys), and every used split gets at least one stage.
__host__ __device__ constexpr int split_chunk(int kv_len, int splits, int stage_keys) {
  const int stages = (kv_len + stage_keys - 1) / stage_keys;
  const int used = splits < stages ? splits : stages;
  return (stages + used - 1) / used * stage_keys;
}

template <int D, int W, int S>
constexpr size_t decode_smem_bytes() {
  return size_t{S} * W * kStageBytes + sizeof(bf16) * kRows * D;  // K/V ring + Q tile
}

// n / d for 0 <= n < 2^31 by multiply-high (the block size is a runtime value; a hardware divide per
// key row would cost more than the rest of the address math).
struct FastDiv {
  uint32_t mul = 1;
  int shift = 0;
  int d = 1;
};

FastDiv make_fast_div(int d) {
  FastDiv f;
  f.d = d;
  while ((1 << f.shift) < d) ++f.shift;
  f.mul = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << f.shift) - d)) / d + 1);
  return f;
}

__device__ __forceinline__ int fast_div(const FastDiv& f, int n) {
  return static_cast<int>((__umulhi(static_cast<uint32_t>(n), f.mul) + static_cast<uint32_t>(n)) >> f.shift);
}

struct DecodeDims {
  int splits;      // grid.x and the split stride of the partials
  int chunk_hint;  // keys per split at the planned length: the table prefetch starts before seq_info lands
  bool fixed;      // every sequence splits at chunk_hint keys (DecodePlan::fixed_chunk)
  int head_chunks;
  int group;  // query heads per KV head
  FastDiv bs;
};

__device__ __forceinline__ float fast_exp2(float x) {  // MUFU.EX2; exp2(-inf) = 0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

template <int D>
__device__ __forceinline__ int swizzle(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) << 3);
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
  __shared__ bool is_last;

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

  const int q_row = __ldg(a.seq_info + seq * 3), kv_len = __ldg(a.seq_info + seq * 3 + 2);
  if (kv_len < 1) {  // not a decode row (q_len 1 implies a key); keeps split_chunk's division defined
    pdl_wait();      // launch.cuh's contract: no block exits before its predecessor completes
    return;
  }
  const int chunk = dd.fixed ? dd.chunk_hint : split_chunk(kv_len, dd.splits, KS);
  const int n_splits = (kv_len + chunk - 1) / chunk;
  if (split >= n_splits) {
    pdl_wait();
    return;
  }
  const int k_begin = split * chunk, k_end = min(kv_len, k_begin + chunk);
  const int n_stages = (k_end - k_begin + KS - 1) / KS;
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
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
    ldmatrix_x4(qf[kk], smem_addr(q_s + swizzle<D>((lane % 8) + ((lane / 8) % 2) * 8, kk * 2 + lane / 16)));

  float o[D / 8][4];
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};  // rows lane/4 and lane/4 + 8
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
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
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < KW / 8; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * h], s[nt][2 * h + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m_run[h], mx * scale_log2);  // finite: key0 < k_end
      const float corr = fast_exp2(m_run[h] - m_new);
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < KW / 8; ++nt) {
        s[nt][2 * h] = fast_exp2(fmaf(s[nt][2 * h], scale_log2, -m_new));
        s[nt][2 * h + 1] = fast_exp2(fmaf(s[nt][2 * h + 1], scale_log2, -m_new));
        sum += s[nt][2 * h] + s[nt][2 * h + 1];
      }
      l_run[h] = l_run[h] * corr + sum;
      m_run[h] = m_new;
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        o[dt][2 * h] *= corr;
        o[dt][2 * h + 1] *= corr;
      }
    }
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

  // Merge the warps: each holds (m, l, O) for 16 rows over its own keys. The ring is free once every
  // warp is past its loop (only empty copy groups can still be pending).
  cp_async_wait<0>();
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l_run[h] += __shfl_xor_sync(0xffffffffu, l_run[h], 1);
    l_run[h] += __shfl_xor_sync(0xffffffffu, l_run[h], 2);
  }
  __syncthreads();
  constexpr int OS = D + kPad;                   // scratch row stride in floats
  float* sc_o = reinterpret_cast<float*>(smem);  // [W][kRows][OS]
  float* sc_m = sc_o + W * kRows * OS;           // [W][kRows]
  float* sc_l = sc_m + W * kRows;
  float* sc_w = sc_l + W * kRows;  // per-warp weights, already divided by the block's L
  float* sc_lse = sc_w + W * kRows;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (lane / 4 + 8 * h >= nh) continue;  // padding rows of a small GQA group: skip their smem traffic
    const int r = warp * kRows + lane / 4 + 8 * h;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt)
      *reinterpret_cast<float2*>(sc_o + r * OS + dt * 8 + 2 * (lane % 4)) = make_float2(o[dt][2 * h], o[dt][2 * h + 1]);
    if (lane % 4 == 0) {
      sc_m[r] = m_run[h];
      sc_l[r] = l_run[h];
    }
  }
  __syncthreads();
  if (tid < nh) {
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < W; ++w) mx = fmaxf(mx, sc_m[w * kRows + tid]);  // finite: warp 0 had keys
    float L = 0.f;
#pragma unroll
    for (int w = 0; w < W; ++w) L += sc_l[w * kRows + tid] * fast_exp2(sc_m[w * kRows + tid] - mx);
    const float inv = 1.f / L;
#pragma unroll
    for (int w = 0; w < W; ++w) sc_w[w * kRows + tid] = fast_exp2(sc_m[w * kRows + tid] - mx) * inv;
    sc_lse[tid] = mx + log2f(L);
  }
  __syncthreads();

  bf16* out = static_cast<bf16*>(a.out);
  auto store_out = [&](int h, int c, float4 v) {
    bf16* dst = out + (static_cast<size_t>(q_row) * a.n_heads + h0 + h) * D + c;
    *reinterpret_cast<__nv_bfloat162*>(dst) = __floats2bfloat162_rn(v.x, v.y);
    *reinterpret_cast<__nv_bfloat162*>(dst + 2) = __floats2bfloat162_rn(v.z, v.w);
  };
  const size_t part_row = (static_cast<size_t>(seq) * a.n_heads + h0) * dd.splits;  // + h * splits + split
  for (int idx = tid; idx < nh * (D / 4); idx += kThreads_) {
    const int h = idx / (D / 4), c = idx % (D / 4) * 4;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int w = 0; w < W; ++w) {
      const float4 v = *reinterpret_cast<const float4*>(sc_o + (w * kRows + h) * OS + c);
      const float wt = sc_w[w * kRows + h];
      acc.x = fmaf(wt, v.x, acc.x);
      acc.y = fmaf(wt, v.y, acc.y);
      acc.z = fmaf(wt, v.z, acc.z);
      acc.w = fmaf(wt, v.w, acc.w);
    }
    if (n_splits == 1) {
      store_out(h, c, acc);
    } else {
      const size_t row = part_row + static_cast<size_t>(h) * dd.splits + split;
      *reinterpret_cast<float4*>(part_o + row * D + c) = acc;
      if (c == 0) part_lse[row] = sc_lse[h];
    }
  }
  if (n_splits == 1) return;

  // Split merge: the last block of this (sequence, KV head, head slice) to arrive combines all splits.
  // One acquire-release ticket per block, taken by thread 0 after the barrier, publishes the whole
  // block's partial stores (the barrier orders them before the release) and, in the last block, orders
  // every thread's partial loads after the acquire. Per-thread __threadfence()s (fence.sc) instead cost
  // 0.3-0.7 us more at 1x8K on the H100.
  __syncthreads();
  int* counter = counters + (seq * a.n_kv_heads + kvh) * dd.head_chunks + hc;
  if (tid == 0) {
    int arrived;
    asm volatile("atom.add.acq_rel.gpu.global.s32 %0, [%1], 1;" : "=r"(arrived) : "l"(counter) : "memory");
    is_last = arrived == n_splits - 1;
    if (is_last) *counter = 0;  // every split has arrived: ready for the next launch
  }
  __syncthreads();
  if (!is_last) return;
  // Each thread owns 4 dims of one head and folds the splits in with a running max, loading a batch of
  // partials (and their lse) at once so the merge costs one L2 round trip per kMergeBatch splits.
  for (int idx = tid; idx < nh * (D / 4); idx += kThreads_) {
    const int h = idx / (D / 4), c = idx % (D / 4) * 4;
    const size_t row = part_row + static_cast<size_t>(h) * dd.splits;
    float run_m = -INFINITY, run_l = 0.f;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int s0 = 0; s0 < n_splits; s0 += kMergeBatch) {
      float lse[kMergeBatch];
      float4 v[kMergeBatch];
#pragma unroll
      for (int i = 0; i < kMergeBatch; ++i) {
        if (s0 + i < n_splits) {
          lse[i] = __ldcg(part_lse + row + s0 + i);
          v[i] = __ldcg(reinterpret_cast<const float4*>(part_o + (row + s0 + i) * D + c));
        } else {
          lse[i] = -INFINITY;
          v[i] = make_float4(0.f, 0.f, 0.f, 0.f);
        }
      }
      float m_new = run_m;
#pragma unroll
      for (int i = 0; i < kMergeBatch; ++i) m_new = fmaxf(m_new, lse[i]);  // finite: split s0 exists
      const float corr = fast_exp2(run_m - m_new);
      run_l *= corr;
      acc.x *= corr;
      acc.y *= corr;
      acc.z *= corr;
      acc.w *= corr;
#pragma unroll
      for (int i = 0; i < kMergeBatch; ++i) {
        const float wt = fast_exp2(lse[i] - m_new);
        run_l += wt;
        acc.x = fmaf(wt, v[i].x, acc.x);
        acc.y = fmaf(wt, v[i].y, acc.y);
        acc.z = fmaf(wt, v[i].z, acc.z);
        acc.w = fmaf(wt, v[i].w, acc.w);
      }
      run_m = m_new;
    }
    const float inv = 1.f / run_l;
    store_out(h, c, make_float4(acc.x * inv, acc.y * inv, acc.z * inv, acc.w * inv));
  }
}

size_t align256(size_t n) {
  return (n + 255) / 256 * 256;
}

template <int D, int W, int S>
void launch_typed(const AttentionLaunch& a, const DecodePlan& plan, void* workspace, int* counters, cudaStream_t s) {
  constexpr size_t smem = decode_smem_bytes<D, W, S>();
  static const bool configured = [] {
    CUDA_CHECK(cudaFuncSetAttribute(decode_kernel<D, W, S>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    return true;
  }();
  (void)configured;
  const DecodeDims dd{plan.splits,
                      plan.chunk,
                      plan.fixed_chunk,
                      plan.head_chunks,
                      a.n_heads / a.n_kv_heads,
                      make_fast_div(a.block_size)};
  float* part_o = static_cast<float*>(workspace);
  float* part_lse = nullptr;
  if (plan.splits > 1) {
    const size_t rows = static_cast<size_t>(a.n_seqs) * a.n_heads * plan.splits;
    part_lse = reinterpret_cast<float*>(static_cast<char*>(workspace) + align256(rows * D * sizeof(float)));
  }
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
  const int wide_keys = keys_per_stage(a.head_dim, kWideWarps);
  const bool narrow = units >= sms && max_len <= kNarrowMaxWideStages * wide_keys;
  plan.warps = narrow ? kNarrowWarps : kWideWarps;
  const int stage_keys = keys_per_stage(a.head_dim, plan.warps);
  const int stages = (max_len + stage_keys - 1) / stage_keys;
  // Blocks an SM holds at once (shared memory bound): one wide, several narrow.
  const size_t ring = static_cast<size_t>(narrow ? kNarrowStages : kWideStages) * plan.warps * kStageBytes;
  const int per_sm = narrow ? static_cast<int>(kSmemPerSm / (ring + sizeof(bf16) * kRows * a.head_dim)) : 1;
  const int cap = std::max(sms, 1) * std::max(per_sm, 1);
  // Blocks run in waves of `cap`. Time model per split count: a full wave streams at the HBM rate; a
  // short last wave is capped by its blocks' own rate (a block pulls at most ~kSmRate times its fair
  // share: 2 stages in flight over the loaded latency); every wave pays a start-up bubble and a split
  // merge one more. Usually this picks one wave (cap / units splits), but it also avoids a last wave of
  // a few lone blocks when units is just above a multiple of cap.
  constexpr double kSmRate = 2.0;
  constexpr double kBubbleBytes = 32 << 10;  // ~1.4 us at an SM's fair share of HBM
  double best = 0;
  for (int s = 1; s <= std::min(stages, cap); ++s) {
    const int chunk = split_chunk(max_len, s, stage_keys);
    const int n = (max_len + chunk - 1) / chunk;
    const int64_t blocks = units * n, waves = (blocks + cap - 1) / cap;
    const double last = static_cast<double>(blocks - (waves - 1) * cap) / cap;
    const double t = static_cast<double>(chunk) * a.head_dim * 4 * (waves - 1 + std::max(last, 1 / kSmRate)) +
                     kBubbleBytes * (waves + (n > 1));
    if (s == 1 || t < best) {
      best = t;
      plan.splits = n;
    }
  }
  plan.chunk = split_chunk(max_len, plan.splits, stage_keys);  // what the kernel derives at max_len
  if (plan.splits > 1) {
    const size_t rows = static_cast<size_t>(a.n_seqs) * a.n_heads * plan.splits;
    plan.workspace = align256(rows * a.head_dim * sizeof(float)) + align256(rows * sizeof(float));
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
  plan.fixed_chunk = true;
  plan.chunk = kFixedSplitKeys;
  plan.splits = (std::max(max_kv_len, 1) + kFixedSplitKeys - 1) / kFixedSplitKeys;
  if (plan.splits > 1) {
    const size_t rows = static_cast<size_t>(a.n_seqs) * a.n_heads * plan.splits;
    plan.workspace = align256(rows * a.head_dim * sizeof(float)) + align256(rows * sizeof(float));
    plan.counters = a.n_seqs * a.n_kv_heads * plan.head_chunks;
  }
  return plan;
}

void launch_attention_decode(const AttentionLaunch& a, const DecodePlan& plan, void* workspace, int* counters,
                             cudaStream_t s) {
  if (a.n_seqs == 0) return;
  const bool wide = plan.warps == kWideWarps;
  if (a.head_dim == 128)
    wide ? launch_typed<128, kWideWarps, kWideStages>(a, plan, workspace, counters, s)
         : launch_typed<128, kNarrowWarps, kNarrowStages>(a, plan, workspace, counters, s);
  else
    wide ? launch_typed<64, kWideWarps, kWideStages>(a, plan, workspace, counters, s)
         : launch_typed<64, kNarrowWarps, kNarrowStages>(a, plan, workspace, counters, s);
}

}  // namespace kestrel::backends::cuda
