// ops::sample on the GPU (contract in ops.h, reference in backends/cpu/sampling.cpp), one block per row of
// logits: logprobs of the raw row when asked, the row's penalties in place, then argmax for greedy rows;
// otherwise temperature, top-k, top-p and min-p cut the vocabulary to the tokens whose order-preserving key is at
// least a threshold, found without sorting by an 8-bit radix select (four histogram passes, weighted
// by counts for top-k and by probability mass for top-p); a block-wide prefix sum then locates the
// row's uniform draw in the kept mass, in vocabulary order.
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "backends/cuda/common.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "ops/ops.h"

namespace kestrel::backends::cuda {
namespace {

constexpr int kThreads = 1024;

// Monotone map float -> uint32 (larger float, larger key); NaN maps to 0, below every number.
__device__ __forceinline__ uint32_t order_key(float f) {
  if (f != f) return 0u;
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

struct ArgMax {
  float v;
  int i;
};
struct ArgMaxOp {
  __device__ ArgMax operator()(const ArgMax& a, const ArgMax& b) const {
    if (a.v != b.v) return a.v > b.v ? a : b;
    return a.i < b.i ? a : b;  // ties: the lowest id, as the CPU sampler does
  }
};

__device__ float logit(const float* x, int64_t i) {
  const float v = x[i];
  return v != v ? -INFINITY : v;
}

// The largest key t with weight(keys >= t, among keys >= floor) >= target. -inf logits (tokens a mask or a
// bias forbids) are left out: they carry no mass, and a row that is mostly -inf (structured output) would
// otherwise send all of them to one histogram bin, serialising the block on that bin's shared atomic.
// Where fewer finite tokens than top-k remain, the select ends at key 0 and keeps them all, as the
// reference's -inf threshold does.
template <typename Weight>
__device__ uint32_t radix_select(const float* x, int64_t V, uint32_t floor, float target, Weight weight) {
  __shared__ float hist[256];
  __shared__ uint32_t s_digit;
  __shared__ float s_above;
  uint32_t prefix = 0, mask = 0;
  float above = 0.f;  // weight of the keys already known to be above the threshold
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += kThreads) hist[i] = 0.f;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < V; i += kThreads) {
      const float v = logit(x, i);
      const uint32_t k = order_key(v);
      if (k < floor || (k & mask) != prefix || v == -INFINITY) continue;
      atomicAdd(&hist[(k >> shift) & 255u], weight(v));
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      uint32_t chosen = 0;
      float cum = above;
      for (int d = 255; d >= 0; --d) {
        if (cum + hist[d] >= target) {
          chosen = d;
          break;
        }
        cum += hist[d];
      }
      s_digit = chosen;
      s_above = cum;
    }
    __syncthreads();
    prefix |= s_digit << shift;
    mask |= 255u << shift;
    above = s_above;
    __syncthreads();
  }
  return prefix;
}

// Logprobs of the raw logits (before penalties): the row's log-sum-exp and its most likely tokens. The
// sampled token's logprob is finished by sample_kernel, which knows the token; it reads the lse from
// out.logprob, where this kernel leaves it.
__global__ void __launch_bounds__(kThreads, 1)
    logprobs_kernel(const float* logits, int64_t V, const ops::SampleRow* rows, ops::SampleOut* outs) {
  using Reduce = cub::BlockReduce<ArgMax, kThreads>;
  using ReduceF = cub::BlockReduce<float, kThreads>;
  __shared__ union {
    typename Reduce::TempStorage reduce;
    typename ReduceF::TempStorage reduce_f;
  } tmp;
  __shared__ ArgMax s_best;
  __shared__ int s_taken[ops::kMaxTopLogprobs];
  const ops::SampleRow p = rows[blockIdx.x];
  if (!(p.flags & ops::kSampleLogprobs)) return;
  const float* x = logits + blockIdx.x * V;
  ops::SampleOut& o = outs[blockIdx.x];
  const int k = min(max(p.top_logprobs, 0), static_cast<int>(V < ops::kMaxTopLogprobs ? V : ops::kMaxTopLogprobs));

  ArgMax best{-INFINITY, 0x7fffffff};
  for (int64_t i = threadIdx.x; i < V; i += kThreads) best = ArgMaxOp{}(best, ArgMax{logit(x, i), static_cast<int>(i)});
  best = Reduce(tmp.reduce).Reduce(best, ArgMaxOp{});
  if (threadIdx.x == 0) s_best = best;
  __syncthreads();
  const float mx = s_best.v;
  float local = 0.f;
  for (int64_t i = threadIdx.x; i < V; i += kThreads) local += __expf(logit(x, i) - mx);
  const float sum = ReduceF(tmp.reduce_f).Sum(local);
  __syncthreads();
  // `sum` is valid in thread 0 only; it finishes the lse after the top-k passes below.
  for (int j = 0; j < k; ++j) {  // k passes of a block argmax over the tokens not yet taken
    ArgMax b{-INFINITY, 0x7fffffff};
    for (int64_t i = threadIdx.x; i < V; i += kThreads) {
      bool taken = false;
      for (int t = 0; t < j; ++t) taken |= s_taken[t] == i;
      if (!taken) b = ArgMaxOp{}(b, ArgMax{logit(x, i), static_cast<int>(i)});
    }
    b = Reduce(tmp.reduce).Reduce(b, ArgMaxOp{});
    if (threadIdx.x == 0) s_taken[j] = b.i == 0x7fffffff ? 0 : b.i;
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const float lse = mx + __logf(sum);
    o.n_top = k;
    for (int j = 0; j < k; ++j) {
      o.top_token[j] = s_taken[j];
      o.top_logprob[j] = logit(x, s_taken[j]) - lse;
    }
    o.logprob = lse;
  }
}

// One block per row: the row's penalty entries, in place, keeping each raw value; then its mask (tokens a
// structured-output constraint forbids become -inf).
__global__ void penalties_kernel(float* logits, int64_t V, const ops::SampleRow* rows, ops::PenaltyEntry* entries,
                                 const uint32_t* masks, int64_t n_masks) {
  const ops::SampleRow p = rows[blockIdx.x];
  float* x = logits + blockIdx.x * V;
  for (int e = p.penalty_begin + threadIdx.x; e < p.penalty_end; e += blockDim.x) {
    ops::PenaltyEntry& pe = entries[e];
    if (pe.token < 0 || pe.token >= V) continue;
    float v = x[pe.token];
    pe.raw = v;
    if (pe.window && p.repetition_penalty != 1.f) v = v > 0 ? v / p.repetition_penalty : v * p.repetition_penalty;
    if (pe.count > 0) v -= p.presence_penalty + p.frequency_penalty * static_cast<float>(pe.count);
    x[pe.token] = v + pe.bias;
  }
  if (p.mask_row < 0 || p.mask_row >= n_masks) return;
  __syncthreads();  // an entry's thread read its raw logit before the mask may overwrite it
  const uint32_t* m = masks + p.mask_row * ((V + 31) / 32);
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x)
    if (!((m[i >> 5] >> (i & 31)) & 1)) x[i] = -INFINITY;
}

__global__ void __launch_bounds__(kThreads, 1) sample_kernel(const float* logits, int64_t V, const ops::SampleRow* rows,
                                                             const ops::PenaltyEntry* entries, ops::SampleOut* outs) {
  using Reduce = cub::BlockReduce<ArgMax, kThreads>;
  using ReduceF = cub::BlockReduce<float, kThreads>;
  using Scan = cub::BlockScan<float, kThreads>;
  __shared__ union {
    typename Reduce::TempStorage reduce;
    typename ReduceF::TempStorage reduce_f;
    typename Scan::TempStorage scan;
  } tmp;
  __shared__ ArgMax s_best;
  __shared__ float s_total;
  __shared__ int s_pick, s_last_kept;

  const ops::SampleRow p = rows[blockIdx.x];
  if (!(p.flags & ops::kSampleRow)) return;
  const float* x = logits + blockIdx.x * V;
  ops::SampleOut& o = outs[blockIdx.x];
  // Thread 0 writes the pick and, with logprobs, the raw logprob of it (lse left in o.logprob).
  auto finish = [&](int token) {
    o.token = token;
    if (p.flags & ops::kSampleLogprobs) {
      float raw = x[token];
      for (int e = p.penalty_begin; e < p.penalty_end; ++e)
        if (entries[e].token == token) raw = entries[e].raw;
      o.logprob = (raw != raw ? -INFINITY : raw) - o.logprob;
    }
  };

  ArgMax best{-INFINITY, 0x7fffffff};
  for (int64_t i = threadIdx.x; i < V; i += kThreads) best = ArgMaxOp{}(best, ArgMax{logit(x, i), static_cast<int>(i)});
  best = Reduce(tmp.reduce).Reduce(best, ArgMaxOp{});
  if (threadIdx.x == 0) s_best = best;
  __syncthreads();
  best = s_best;
  if (p.temperature <= 0.f || p.top_k == 1 || best.v == -INFINITY) {
    if (threadIdx.x == 0) finish(best.i == 0x7fffffff ? 0 : best.i);
    return;
  }
  const float vmax = best.v, inv_t = 1.f / p.temperature;
  auto mass = [=](float v) { return __expf((v - vmax) * inv_t); };

  // top-k, then top-p over what top-k kept, then min-p (the reference's order, backends/cpu/sampling.cpp).
  uint32_t floor = 0;
  if (p.top_k > 0 && p.top_k < V)
    floor = radix_select(x, V, floor, static_cast<float>(p.top_k), [](float) { return 1.f; });
  if (p.top_p < 1.f) {
    float local = 0.f;
    for (int64_t i = threadIdx.x; i < V; i += kThreads) {
      const float v = logit(x, i);
      if (order_key(v) >= floor) local += mass(v);
    }
    const float total = ReduceF(tmp.reduce_f).Sum(local);
    if (threadIdx.x == 0) s_total = total;
    __syncthreads();
    floor = max(floor, radix_select(x, V, floor, p.top_p * s_total, mass));
  }
  if (p.min_p > 0.f) floor = max(floor, order_key(vmax + p.temperature * __logf(p.min_p)));

  // Draw: each thread owns a contiguous slice of the vocabulary so a prefix sum orders the mass by id.
  const int64_t per = (V + kThreads - 1) / kThreads;
  const int64_t begin = threadIdx.x * per, end = min(V, begin + per);
  float local = 0.f;
  int last_kept = -1;
  for (int64_t i = begin; i < end; ++i) {
    const float v = logit(x, i);
    if (order_key(v) >= floor && v != -INFINITY) {  // -inf: no mass, never drawn (as the reference)
      local += mass(v);
      last_kept = static_cast<int>(i);
    }
  }
  float prefix = 0.f, total = 0.f;
  Scan(tmp.scan).ExclusiveSum(local, prefix, total);
  if (threadIdx.x == 0) {
    s_pick = -1;
    s_last_kept = -1;
  }
  __syncthreads();
  atomicMax(&s_last_kept, last_kept);
  const float u = p.uniform * total;
  if (local > 0.f && u >= prefix && u < prefix + local) {
    float cum = prefix;
    int pick = last_kept;
    for (int64_t i = begin; i < end; ++i) {
      const float v = logit(x, i);
      if (order_key(v) < floor || v == -INFINITY) continue;
      cum += mass(v);
      if (u < cum) {
        pick = static_cast<int>(i);
        break;
      }
    }
    s_pick = pick;
  }
  __syncthreads();
  if (threadIdx.x == 0) finish(s_pick >= 0 ? s_pick : (s_last_kept >= 0 ? s_last_kept : best.i));
}

__global__ void feed_sampled_kernel(int32_t* tokens, const int32_t* from, int64_t T, const ops::SampleOut* prev,
                                    int64_t R) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i >= T) return;
  const int32_t f = from[i];
  if (f >= 0 && f < R) tokens[i] = prev[f].token;
}

}  // namespace

void launch_feed_sampled(int32_t* tokens, const int32_t* from, int64_t T, const ops::SampleOut* prev, int64_t R,
                         cudaStream_t s) {
  if (T == 0) return;
  feed_sampled_kernel<<<static_cast<unsigned>((T + 255) / 256), 256, 0, s>>>(tokens, from, T, prev, R);
  CUDA_CHECK_LAUNCH();
}

void launch_sample(float* logits, int64_t R, int64_t V, const ops::SampleRow* rows, ops::PenaltyEntry* entries,
                   ops::SampleOut* out, const uint32_t* masks, int64_t n_masks, cudaStream_t s) {
  if (R == 0) return;
  const auto grid = static_cast<unsigned>(R);
  logprobs_kernel<<<grid, kThreads, 0, s>>>(logits, V, rows, out);
  penalties_kernel<<<grid, 128, 0, s>>>(logits, V, rows, entries, masks, n_masks);
  sample_kernel<<<grid, kThreads, 0, s>>>(logits, V, rows, entries, out);
  CUDA_CHECK_LAUNCH();
}

}  // namespace kestrel::backends::cuda
