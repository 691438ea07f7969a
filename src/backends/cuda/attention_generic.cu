// Plain causal attention over the paged bf16 cache for what the tiled kernels do not cover (any even head_dim
// up to kGenericMaxHeadDim, sliding windows): one block per (query row, head), keys in chunks of one per
// thread with an online softmax. It serves prefill and decode alike and reads each key and value row once
// per query row, so it is far from the flash/split-KV kernels' speed; the registry ranks it below them.
#include <cmath>

#include "backends/cuda/common.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"

namespace kestrel::backends::cuda {
namespace {

constexpr int kThreads = 128;  // keys per chunk; each thread also owns output dims tid and tid + kThreads
static_assert(kGenericMaxHeadDim <= 2 * kThreads);

__global__ void __launch_bounds__(kThreads) attention_generic_kernel(const AttentionLaunch a) {
  const int row = blockIdx.x, head = blockIdx.y, seq = blockIdx.z;
  const int q_begin = a.seq_info[seq * 3], q_len = a.seq_info[seq * 3 + 1], kv_len = a.seq_info[seq * 3 + 2];
  if (row >= q_len) return;
  const int D = a.head_dim, tid = threadIdx.x;
  const int kvh = head / (a.n_heads / a.n_kv_heads);
  const int n_keys = kv_len - q_len + row + 1;  // causal: the row sits at position kv_len - q_len + row
  const int first = a.window > 0 ? max(0, n_keys - a.window) : 0;
  const int* table = a.block_tables + static_cast<size_t>(seq) * a.max_blocks;
  const size_t row_stride = static_cast<size_t>(a.n_kv_heads) * D;
  auto kv_row = [&](const void* cache, int j) {
    const int slot = table[j / a.block_size] * a.block_size + j % a.block_size;
    return static_cast<const bf16*>(cache) + slot * row_stride + static_cast<size_t>(kvh) * D;
  };

  __shared__ float q_s[kGenericMaxHeadDim];
  __shared__ float p_s[kThreads];
  const bf16* q = static_cast<const bf16*>(a.q) + (static_cast<size_t>(q_begin + row) * a.n_heads + head) * D;
  for (int d = tid; d < D; d += kThreads) q_s[d] = __bfloat162float(q[d]) * a.scale;
  __syncthreads();

  float m = -INFINITY, l = 0.f, acc0 = 0.f, acc1 = 0.f;
  for (int base = first; base < n_keys; base += kThreads) {
    const int j = base + tid;
    float s = -INFINITY;
    if (j < n_keys) {
      const __nv_bfloat162* k = reinterpret_cast<const __nv_bfloat162*>(kv_row(a.k_cache, j));
      s = 0.f;
      for (int d = 0; d < D / 2; ++d) {
        const float2 kk = __bfloat1622float2(k[d]);
        s += q_s[2 * d] * kk.x + q_s[2 * d + 1] * kk.y;
      }
    }
    const float m_new = fmaxf(m, block_reduce<kThreads>(s, MaxOp{}));  // finite: the chunk has a key
    const float p = j < n_keys ? __expf(s - m_new) : 0.f;
    const float corr = __expf(m - m_new);
    p_s[tid] = p;
    l = l * corr + block_reduce<kThreads>(p, SumOp{});  // its barrier also publishes p_s
    acc0 *= corr;
    acc1 *= corr;
    m = m_new;
    const int n = min(kThreads, n_keys - base);
    for (int t = 0; t < n; ++t) {
      const bf16* v = kv_row(a.v_cache, base + t);
      if (tid < D) acc0 += p_s[t] * __bfloat162float(v[tid]);
      if (tid + kThreads < D) acc1 += p_s[t] * __bfloat162float(v[tid + kThreads]);
    }
    __syncthreads();  // p_s and the reductions' scratch are rewritten by the next chunk
  }
  bf16* out = static_cast<bf16*>(a.out) + (static_cast<size_t>(q_begin + row) * a.n_heads + head) * D;
  const float inv = 1.f / l;
  if (tid < D) out[tid] = __float2bfloat16(acc0 * inv);
  if (tid + kThreads < D) out[tid + kThreads] = __float2bfloat16(acc1 * inv);
}

}  // namespace

void launch_attention_generic(const AttentionLaunch& a, int max_q_len, cudaStream_t stream) {
  if (max_q_len == 0 || a.n_seqs == 0) return;
  const dim3 grid(static_cast<unsigned>(max_q_len), static_cast<unsigned>(a.n_heads), static_cast<unsigned>(a.n_seqs));
  attention_generic_kernel<<<grid, kThreads, 0, stream>>>(a);
  CUDA_CHECK_LAUNCH();
}

}  // namespace kestrel::backends::cuda
