// Split-KV decode attention (one query token per sequence) over the paged bf16 cache. A block owns
// (sequence, KV head, slice of its query heads, KV split): each group of D/8 lanes reads one key row and
// one value row per step as 16-byte vectors, scores it against all the query heads that share the KV
// head (GQA: the KV bytes are read once per group, not once per query head) and keeps an online
// softmax. Groups merge in shared memory; splits merge in the same launch: the last block of a
// (sequence, head) to finish (an atomic ticket) combines the partial outputs by their log-sum-exp, so a
// decode step is one kernel. Memory-bound by design: the KV bytes are the whole cost.
#include <algorithm>
#include <cmath>

#include "backends/cuda/common.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"

namespace kestrel::backends::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kUnroll = 4;  // keys per group per step: 8 independent 16-byte loads in flight per thread
constexpr int kMaxSplits = 128;
constexpr int kMinKeysPerSplit = 128;

struct DecodeDims {
  int splits, chunk, head_chunks, group;  // group: query heads per KV head
};

__device__ __forceinline__ void unpack8(const uint4& u, float (&f)[8]) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 v = __bfloat1622float2(h[i]);
    f[2 * i] = v.x;
    f[2 * i + 1] = v.y;
  }
}

template <int D, int GMAX>
__global__ void __launch_bounds__(kThreads)
    decode_kernel(const AttentionLaunch a, const DecodeDims dd, float* part_o, float* part_lse, int* counters) {
  constexpr int LPK = D / 8;          // lanes per key row
  constexpr int NG = kThreads / LPK;  // key groups per block
  __shared__ float sm_m[NG][GMAX], sm_l[NG][GMAX];
  __shared__ float sm_o[NG][GMAX][D];
  __shared__ float sm_w[GMAX][kMaxSplits];
  __shared__ bool is_last;

  const int split = blockIdx.x;
  const int kvh = blockIdx.y / dd.head_chunks, hc = blockIdx.y % dd.head_chunks;
  const int seq = blockIdx.z;
  const int q_row = a.seq_info[seq * 3], kv_len = a.seq_info[seq * 3 + 2];
  const int n_splits = (kv_len + dd.chunk - 1) / dd.chunk;
  if (split >= n_splits) return;
  const int k_begin = split * dd.chunk, k_end = min(kv_len, k_begin + dd.chunk);
  const int h0 = kvh * dd.group + hc * GMAX;
  const int nh = min(GMAX, dd.group - hc * GMAX);
  const int grp = threadIdx.x / LPK, sub = threadIdx.x % LPK;
  const float scale_log2 = a.scale * 1.4426950408889634f;

  float q[GMAX][8];
  const bf16* qp = static_cast<const bf16*>(a.q) + (static_cast<size_t>(q_row) * a.n_heads + h0) * D + sub * 8;
#pragma unroll
  for (int h = 0; h < GMAX; ++h) {
    if (h < nh) {
      unpack8(*reinterpret_cast<const uint4*>(qp + h * D), q[h]);
#pragma unroll
      for (int e = 0; e < 8; ++e) q[h][e] *= scale_log2;
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) q[h][e] = 0.f;
    }
  }

  float m[GMAX], l[GMAX], acc[GMAX][8];
#pragma unroll
  for (int h = 0; h < GMAX; ++h) {
    m[h] = -INFINITY;
    l[h] = 0.f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[h][e] = 0.f;
  }

  const int* table = a.block_tables + static_cast<size_t>(seq) * a.max_blocks;
  const bf16* kc = static_cast<const bf16*>(a.k_cache);
  const bf16* vc = static_cast<const bf16*>(a.v_cache);
  const size_t head_off = static_cast<size_t>(kvh) * D + sub * 8;
  // The trip count must be uniform across the warp (its groups shuffle together), so a group past the
  // end of the split runs with every key masked.
  for (int base = k_begin; base < k_end; base += NG * kUnroll) {
    const int p0 = base + grp;
    uint4 kr[kUnroll], vr[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int p = p0 + u * NG;
      if (p < k_end) {
        const size_t slot = static_cast<size_t>(__ldg(table + p / a.block_size)) * a.block_size + p % a.block_size;
        const size_t off = slot * a.n_kv_heads * D + head_off;
        kr[u] = __ldg(reinterpret_cast<const uint4*>(kc + off));
        vr[u] = __ldg(reinterpret_cast<const uint4*>(vc + off));
      } else {
        kr[u] = vr[u] = make_uint4(0, 0, 0, 0);
      }
    }
    float s[kUnroll][GMAX];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float kf[8];
      unpack8(kr[u], kf);
#pragma unroll
      for (int h = 0; h < GMAX; ++h) {
        float d = 0.f;
#pragma unroll
        for (int e = 0; e < 8; ++e) d = fmaf(q[h][e], kf[e], d);
        s[u][h] = d;
      }
    }
#pragma unroll
    for (int off = LPK / 2; off > 0; off >>= 1)
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
#pragma unroll
        for (int h = 0; h < GMAX; ++h) s[u][h] += __shfl_xor_sync(0xffffffffu, s[u][h], off);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
      if (p0 + u * NG >= k_end)
#pragma unroll
        for (int h = 0; h < GMAX; ++h) s[u][h] = -INFINITY;

    float vf[kUnroll][8];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) unpack8(vr[u], vf[u]);
#pragma unroll
    for (int h = 0; h < GMAX; ++h) {
      float m_new = m[h];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) m_new = fmaxf(m_new, s[u][h]);
      const float ref = m_new == -INFINITY ? 0.f : m_new;  // all keys so far masked: keep zeros, not NaN
      const float corr = exp2f(m[h] - ref);
      m[h] = m_new;
      float p[kUnroll];
      float sum = 0.f;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) sum += (p[u] = exp2f(s[u][h] - ref));
      l[h] = l[h] * corr + sum;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        float v = acc[h][e] * corr;
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) v = fmaf(p[u], vf[u][e], v);
        acc[h][e] = v;
      }
    }
  }

  // Merge the key groups of this block.
  if (sub == 0)
#pragma unroll
    for (int h = 0; h < GMAX; ++h) {
      sm_m[grp][h] = m[h];
      sm_l[grp][h] = l[h];
    }
#pragma unroll
  for (int h = 0; h < GMAX; ++h)
#pragma unroll
    for (int e = 0; e < 8; ++e) sm_o[grp][h][sub * 8 + e] = acc[h][e];
  __syncthreads();

  bf16* out = static_cast<bf16*>(a.out);
  const size_t part_base = (static_cast<size_t>(seq) * a.n_heads + h0) * dd.splits;
  for (int idx = threadIdx.x; idx < nh * D; idx += kThreads) {
    const int h = idx / D, d = idx % D;
    float mx = -INFINITY;
#pragma unroll
    for (int g = 0; g < NG; ++g) mx = fmaxf(mx, sm_m[g][h]);
    float L = 0.f, O = 0.f;
#pragma unroll
    for (int g = 0; g < NG; ++g) {
      const float w = sm_m[g][h] == -INFINITY ? 0.f : exp2f(sm_m[g][h] - mx);
      L += sm_l[g][h] * w;
      O += sm_o[g][h][d] * w;
    }
    if (n_splits == 1) {
      out[(static_cast<size_t>(q_row) * a.n_heads + h0 + h) * D + d] = __float2bfloat16(O / L);
    } else {
      part_o[(part_base + static_cast<size_t>(h) * dd.splits + split) * D + d] = O / L;
      if (d == 0) part_lse[part_base + static_cast<size_t>(h) * dd.splits + split] = mx + log2f(L);
    }
  }
  if (n_splits == 1) return;

  // Split merge: the last block of this (sequence, KV head, head slice) to arrive combines all splits.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    const int ticket = atomicAdd(&counters[(seq * a.n_kv_heads + kvh) * dd.head_chunks + hc], 1);
    is_last = ticket == n_splits - 1;
  }
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  if (threadIdx.x == 0) counters[(seq * a.n_kv_heads + kvh) * dd.head_chunks + hc] = 0;  // ready for the next launch
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int h = warp; h < nh; h += kThreads / 32) {
    const float* lse = part_lse + part_base + static_cast<size_t>(h) * dd.splits;
    float mx = -INFINITY;
    for (int s = lane; s < n_splits; s += 32) mx = fmaxf(mx, __ldcg(lse + s));
    for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    float sum = 0.f;
    for (int s = lane; s < n_splits; s += 32) sum += (sm_w[h][s] = exp2f(__ldcg(lse + s) - mx));
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    for (int s = lane; s < n_splits; s += 32) sm_w[h][s] /= sum;
  }
  __syncthreads();
  // Each thread owns 4 consecutive dims of one head and streams its splits as float4s, several in
  // flight, so the merge costs a few L2 round trips rather than one per split.
  for (int idx = threadIdx.x; idx < nh * (D / 4); idx += kThreads) {
    const int h = idx / (D / 4), d = (idx % (D / 4)) * 4;
    const float4* po =
        reinterpret_cast<const float4*>(part_o + (part_base + static_cast<size_t>(h) * dd.splits) * D + d);
    float4 acc4 = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 8
    for (int s = 0; s < n_splits; ++s) {
      const float4 v = __ldcg(po + static_cast<size_t>(s) * (D / 4));
      const float w = sm_w[h][s];
      acc4.x = fmaf(w, v.x, acc4.x);
      acc4.y = fmaf(w, v.y, acc4.y);
      acc4.z = fmaf(w, v.z, acc4.z);
      acc4.w = fmaf(w, v.w, acc4.w);
    }
    bf16* dst = out + (static_cast<size_t>(q_row) * a.n_heads + h0 + h) * D + d;
    *reinterpret_cast<__nv_bfloat162*>(dst) = __floats2bfloat162_rn(acc4.x, acc4.y);
    *reinterpret_cast<__nv_bfloat162*>(dst + 2) = __floats2bfloat162_rn(acc4.z, acc4.w);
  }
}

int group_max(int group) {
  return group <= 1 ? 1 : group <= 2 ? 2 : group <= 4 ? 4 : 8;
}

size_t align256(size_t n) {
  return (n + 255) / 256 * 256;
}

template <int D, int GMAX>
void launch_typed(const AttentionLaunch& a, const DecodePlan& plan, void* workspace, int* counters, cudaStream_t s) {
  const DecodeDims dd{plan.splits, plan.chunk, plan.head_chunks, a.n_heads / a.n_kv_heads};
  float* part_o = static_cast<float*>(workspace);
  float* part_lse = nullptr;
  if (plan.splits > 1) {
    const size_t rows = static_cast<size_t>(a.n_seqs) * a.n_heads * plan.splits;
    part_lse = reinterpret_cast<float*>(static_cast<char*>(workspace) + align256(rows * D * sizeof(float)));
  }
  const dim3 grid(plan.splits, a.n_kv_heads * plan.head_chunks, a.n_seqs);
  decode_kernel<D, GMAX><<<grid, kThreads, 0, s>>>(a, dd, part_o, part_lse, counters);
  CUDA_CHECK_LAUNCH();
}

template <int D, int GMAX>
int occupancy() {
  static const int n = [] {
    int blocks = 0;
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, decode_kernel<D, GMAX>, kThreads, 0));
    return std::max(blocks, 1);
  }();
  return n;
}

template <int D>
int occupancy_for_group(int group) {
  switch (group_max(group)) {
    case 1: return occupancy<D, 1>();
    case 2: return occupancy<D, 2>();
    case 4: return occupancy<D, 4>();
    default: return occupancy<D, 8>();
  }
}

int resident_blocks_per_sm(int head_dim, int group) {
  return head_dim == 128 ? occupancy_for_group<128>(group) : occupancy_for_group<64>(group);
}

template <int D>
void launch_dim(const AttentionLaunch& a, const DecodePlan& plan, void* workspace, int* counters, cudaStream_t s) {
  switch (group_max(a.n_heads / a.n_kv_heads)) {
    case 1: launch_typed<D, 1>(a, plan, workspace, counters, s); break;
    case 2: launch_typed<D, 2>(a, plan, workspace, counters, s); break;
    case 4: launch_typed<D, 4>(a, plan, workspace, counters, s); break;
    default: launch_typed<D, 8>(a, plan, workspace, counters, s); break;
  }
}

}  // namespace

DecodePlan plan_attention_decode(const AttentionLaunch& a, int max_kv_len, int sms) {
  DecodePlan plan;
  const int group = a.n_heads / a.n_kv_heads;
  plan.head_chunks = (group + group_max(group) - 1) / group_max(group);
  const int64_t units = int64_t{a.n_seqs} * a.n_kv_heads * plan.head_chunks;
  // Splits fill one wave of resident blocks without spilling into a second, mostly idle one; a split
  // keeps at least kMinKeysPerSplit keys so the merge stays cheap next to the KV reads.
  const int64_t resident = int64_t{sms} * resident_blocks_per_sm(a.head_dim, group);
  int64_t splits = std::max<int64_t>(1, resident / units);
  splits = std::min<int64_t>(splits, (max_kv_len + kMinKeysPerSplit - 1) / kMinKeysPerSplit);
  splits = std::clamp<int64_t>(splits, 1, kMaxSplits);
  const int64_t align = 64;
  const int64_t chunk = ((max_kv_len + splits - 1) / splits + align - 1) / align * align;
  plan.chunk = static_cast<int>(std::max<int64_t>(chunk, align));
  plan.splits = static_cast<int>((max_kv_len + plan.chunk - 1) / plan.chunk);
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
  if (a.head_dim == 128)
    launch_dim<128>(a, plan, workspace, counters, s);
  else
    launch_dim<64>(a, plan, workspace, counters, s);
}

}  // namespace kestrel::backends::cuda
