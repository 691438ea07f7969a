// What the split-KV decode kernels share (attention_decode.cu over bf16 pages, attention_decode_codes.cu over
// code pages): split geometry, the fast divide for block-table lookups, the online softmax of one warp's
// 16 query rows, and the merges (the block's warps in shared memory, then the splits by their log-sum-exp in
// the last block to finish), so a decode step is one kernel whatever the page type.
#pragma once

#include <cmath>
#include <cstdint>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/mma.cuh"

namespace kestrel::backends::cuda::decode {

constexpr int kWideWarps = 8, kWideStages = 3;  // ring depth per warp: stages - 1 load while one is computed
constexpr size_t kSmemPerSm = 227 << 10;        // sm_90's shared memory per SM available to blocks
constexpr int kRows = 16;                       // query heads per block: the M of the m16n8k16 MMAs
constexpr int kMergeBatch = 16;                 // split partials the last block loads at once per thread
constexpr int kPad = 8;                         // floats of padding per row of the warp-merge scratch (bank spread)

// Keys per split for a sequence of kv_len keys on a grid of `splits` splits: as even as possible, whole
// block stages (so every warp has keys), and every used split gets at least one stage.
__host__ __device__ constexpr int split_chunk(int kv_len, int splits, int stage_keys) {
  const int stages = (kv_len + stage_keys - 1) / stage_keys;
  const int used = splits < stages ? splits : stages;
  return (stages + used - 1) / used * stage_keys;
}

// n / d for 0 <= n < 2^31 by multiply-high (the block size is a runtime value; a hardware divide per
// key row would cost more than the rest of the address math).
struct FastDiv {
  uint32_t mul = 1;
  int shift = 0;
  int d = 1;
};

inline FastDiv make_fast_div(int d) {
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

// The keys split `split` of sequence `seq` covers, for stages of stage_keys keys. `ok` false: the block has
// nothing to do (not a decode row, or a split past the sequence) — it must still pdl_wait() before exiting
// (launch.cuh's contract: no block exits before its predecessor completes).
struct SplitRange {
  bool ok;
  int q_row, n_splits, chunk, k_begin, k_end, n_stages;
};

__device__ __forceinline__ SplitRange split_range(const AttentionLaunch& a, const DecodeDims& dd, int seq, int split,
                                                  int stage_keys) {
  SplitRange r{};
  r.q_row = __ldg(a.seq_info + seq * 3);
  const int kv_len = __ldg(a.seq_info + seq * 3 + 2);
  if (kv_len < 1) return r;  // q_len 1 implies a key; this keeps split_chunk's division defined
  r.chunk = dd.fixed ? dd.chunk_hint : split_chunk(kv_len, dd.splits, stage_keys);
  r.n_splits = (kv_len + r.chunk - 1) / r.chunk;
  if (split >= r.n_splits) return r;
  r.k_begin = split * r.chunk;
  r.k_end = min(kv_len, r.k_begin + r.chunk);
  r.n_stages = (r.k_end - r.k_begin + stage_keys - 1) / stage_keys;
  r.ok = true;
  return r;
}

inline DecodeDims decode_dims(const AttentionLaunch& a, const DecodePlan& plan) {
  return {plan.splits,
          plan.chunk,
          plan.fixed_chunk,
          plan.head_chunks,
          a.n_heads / a.n_kv_heads,
          make_fast_div(a.block_size)};
}

__device__ __forceinline__ float fast_exp2(float x) {  // MUFU.EX2; exp2(-inf) = 0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Element offset of 16-byte chunk `chunk` of row `row` in a [rows][D] tile of 16-bit values whose chunks
// are XOR-swizzled by row, so ldmatrix and the row copies hit distinct banks.
template <int D>
__device__ __forceinline__ int swizzle(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) << 3);
}

// A warp's A fragments of the kRows x D Q tile (16-bit values, swizzled) for its D / 16 k-steps.
template <int D>
__device__ __forceinline__ void load_q_fragments(uint32_t (&qf)[D / 16][4], const void* q_s, int lane) {
  const auto* q = static_cast<const uint16_t*>(q_s);
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
    ldmatrix_x4(qf[kk], smem_addr(q + swizzle<D>((lane % 8) + ((lane / 8) % 2) * 8, kk * 2 + lane / 16)));
}

// The empty state of a warp's online softmax: output, running max and sum of rows lane/4 and lane/4 + 8.
template <int D>
__device__ __forceinline__ void clear_running(float (&o)[D / 8][4], float (&m_run)[2], float (&l_run)[2]) {
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  m_run[0] = m_run[1] = -INFINITY;
  l_run[0] = l_run[1] = 0.f;
}

// One online-softmax step of a warp over NT tiles of 8 keys (S accumulators of rows lane/4 and lane/4 + 8):
// scales the scores by scale_log2 into base-2 exponents, rescales the running sum and output, and leaves
// the probabilities in s. The caller masks keys past the sequence to -inf first; the tile has a real key.
// The output rescale (D / 4 multiplies per lane, as many as the P V MMAs' accumulators) is skipped when no
// row's max grew anywhere in the warp, which after the first tiles is most of them: the factor would be
// exactly 1.
template <int NT, int DT>
__device__ __forceinline__ void softmax_step(float (&s)[NT][4], float (&m_run)[2], float (&l_run)[2], float (&o)[DT][4],
                                             float scale_log2) {
  float m_new[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float mx = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * h], s[nt][2 * h + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    m_new[h] = fmaxf(m_run[h], mx * scale_log2);  // finite: the tile has a key
  }
  if (__any_sync(0xffffffffu, m_new[0] > m_run[0] || m_new[1] > m_run[1])) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float corr = fast_exp2(m_run[h] - m_new[h]);
      l_run[h] *= corr;
#pragma unroll
      for (int dt = 0; dt < DT; ++dt) {
        o[dt][2 * h] *= corr;
        o[dt][2 * h + 1] *= corr;
      }
    }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float sum = 0.f;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      s[nt][2 * h] = fast_exp2(fmaf(s[nt][2 * h], scale_log2, -m_new[h]));
      s[nt][2 * h + 1] = fast_exp2(fmaf(s[nt][2 * h + 1], scale_log2, -m_new[h]));
      sum += s[nt][2 * h] + s[nt][2 * h + 1];
    }
    l_run[h] += sum;
    m_run[h] = m_new[h];
  }
}

// Where a block of (sequence, KV head, head slice, split) writes its result.
struct MergeTarget {
  int seq, kvh, hc, split, n_splits;
  int q_row, h0, nh;  // the sequence's query row, its first query head, the heads this block holds
};

// Merges the block's W warps — each holds (m, l, O) for 16 rows over its own keys — through `smem` (at
// least W * kRows * (D + kPad + 4) floats, free for reuse: the caller has drained its copies and passed a
// barrier-free point) and writes the output, or a split partial whose last block to arrive merges them all.
// kSpanCols: column n of output tile j is dim n * D / 8 + j (attention_decode_codes.cu's V fragments), not
// dim 8 j + n.
template <int D, int W, bool kSpanCols = false>
__device__ __forceinline__ void merge_and_store(const AttentionLaunch& a, const DecodeDims& dd, const MergeTarget& t,
                                                float (&o)[D / 8][4], const float (&m_run)[2], float (&l_run)[2],
                                                unsigned char* smem, float* part_o, float* part_lse, int* counters) {
  constexpr int kThreads = W * 32;
  __shared__ bool is_last;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int nh = t.nh, n_splits = t.n_splits;
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
    for (int dt = 0; dt < D / 8; ++dt) {
      if constexpr (kSpanCols) {
        sc_o[r * OS + 2 * (lane % 4) * (D / 8) + dt] = o[dt][2 * h];
        sc_o[r * OS + (2 * (lane % 4) + 1) * (D / 8) + dt] = o[dt][2 * h + 1];
      } else {
        *reinterpret_cast<float2*>(sc_o + r * OS + dt * 8 + 2 * (lane % 4)) =
            make_float2(o[dt][2 * h], o[dt][2 * h + 1]);
      }
    }
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
    bf16* dst = out + (static_cast<size_t>(t.q_row) * a.n_heads + t.h0 + h) * D + c;
    *reinterpret_cast<__nv_bfloat162*>(dst) = __floats2bfloat162_rn(v.x, v.y);
    *reinterpret_cast<__nv_bfloat162*>(dst + 2) = __floats2bfloat162_rn(v.z, v.w);
  };
  const size_t part_row = (static_cast<size_t>(t.seq) * a.n_heads + t.h0) * dd.splits;  // + h * splits + split
  for (int idx = tid; idx < nh * (D / 4); idx += kThreads) {
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
      const size_t row = part_row + static_cast<size_t>(h) * dd.splits + t.split;
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
  int* counter = counters + (t.seq * a.n_kv_heads + t.kvh) * dd.head_chunks + t.hc;
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
  for (int idx = tid; idx < nh * (D / 4); idx += kThreads) {
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

inline size_t align256(size_t n) {
  return (n + 255) / 256 * 256;
}

// Scratch of a plan with `splits` splits: the partial outputs, then their log-sum-exps.
inline size_t partials_bytes(const AttentionLaunch& a, int splits) {
  const size_t rows = static_cast<size_t>(a.n_seqs) * a.n_heads * splits;
  return align256(rows * a.head_dim * sizeof(float)) + align256(rows * sizeof(float));
}

inline float* partial_lse(const AttentionLaunch& a, int splits, void* workspace) {
  if (splits <= 1) return nullptr;
  const size_t rows = static_cast<size_t>(a.n_seqs) * a.n_heads * splits;
  return reinterpret_cast<float*>(static_cast<char*>(workspace) + align256(rows * a.head_dim * sizeof(float)));
}

}  // namespace kestrel::backends::cuda::decode
