// Plain causal attention over the paged cache for what the tiled kernels do not cover (any even head_dim
// up to kGenericMaxHeadDim, sliding windows, quantized pages): one block per (query row, head), keys in
// chunks of one per thread with an online softmax. It serves prefill and decode alike and reads each key
// and value row once per query row, so it is far from the flash/split-KV kernels' speed; the registry ranks
// it below them. Code pages (fp8, int8, int4, int2: core/kv_codec.h) are decoded in registers: keys eight elements
// at a time, values one element per output dimension.
#include <cmath>
#include <type_traits>

#include "backends/cuda/common.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "core/kv_codec.h"

namespace kestrel::backends::cuda {
namespace {

constexpr int kThreads = 128;  // keys per chunk; each thread also owns output dims tid and tid + kThreads
static_assert(kGenericMaxHeadDim <= 2 * kThreads);

// One position's row of one kv head: bf16 values (kCode < 0) or the codes of quant::KvCode kCode with their
// params (one group of `group` elements per kv_params(code) halves).
template <int kCode>
struct PageRow {
  const uint8_t* p;
  const uint16_t* params;
  int group;
  static constexpr quant::KvCode C = static_cast<quant::KvCode>(kCode < 0 ? 0 : kCode);
  static constexpr int P = quant::kv_params(C);

  __device__ float at(int d) const {
    if constexpr (kCode < 0)
      return __bfloat162float(reinterpret_cast<const bf16*>(p)[d]);
    else
      return quant::kv_decode<C>(p, params + d / group * P, d);
  }
  // q_s . row over D elements (q_s pre-scaled, in shared memory).
  __device__ float dot(const float* q_s, int D) const {
    float s = 0.f;
    if constexpr (kCode < 0) {
      const __nv_bfloat162* k = reinterpret_cast<const __nv_bfloat162*>(p);
      for (int d = 0; d < D / 2; ++d) {
        const float2 kk = __bfloat1622float2(k[d]);
        s += q_s[2 * d] * kk.x + q_s[2 * d + 1] * kk.y;
      }
    } else {
      float w[quant::kGroup];
      for (int d0 = 0; d0 < D; d0 += quant::kGroup) {
        quant::kv_decode8<C>(p, params + d0 / group * P, d0, w);
#pragma unroll
        for (int i = 0; i < quant::kGroup; ++i) s += q_s[d0 + i] * w[i];
      }
    }
    return s;
  }
};

template <int kCode>
__global__ void __launch_bounds__(kThreads) attention_generic_kernel(const AttentionLaunch a) {
  const int row = blockIdx.x, head = blockIdx.y, seq = blockIdx.z;
  const int q_begin = a.seq_info[seq * 3], q_len = a.seq_info[seq * 3 + 1], kv_len = a.seq_info[seq * 3 + 2];
  if (row >= q_len) return;
  const int D = a.head_dim, tid = threadIdx.x;
  const int kvh = head / (a.n_heads / a.n_kv_heads);
  const int n_keys = kv_len - q_len + row + 1;  // causal: the row sits at position kv_len - q_len + row
  const int first = a.window > 0 ? max(0, n_keys - a.window) : 0;
  const int* table = a.block_tables + static_cast<size_t>(seq) * a.max_blocks;
  using Row = PageRow<kCode>;
  const int64_t row_bytes = kCode < 0 ? 2 * D : quant::kv_row_bytes(Row::C, D);
  const int64_t row_params = kCode < 0 ? 0 : D / a.kv_group * Row::P;
  auto kv_row = [&](const void* cache, const void* params, int j) {
    const int64_t slot = int64_t{table[j / a.block_size]} * a.block_size + j % a.block_size;
    const int64_t r = slot * a.n_kv_heads + kvh;
    return Row{static_cast<const uint8_t*>(cache) + r * row_bytes,
               static_cast<const uint16_t*>(params) + r * row_params, a.kv_group};
  };

  __shared__ float q_s[kGenericMaxHeadDim];
  __shared__ float p_s[kThreads];
  const bf16* q = static_cast<const bf16*>(a.q) + (static_cast<size_t>(q_begin + row) * a.n_heads + head) * D;
  for (int d = tid; d < D; d += kThreads) q_s[d] = __bfloat162float(q[d]) * a.scale;
  __syncthreads();

  float m = -INFINITY, l = 0.f, acc0 = 0.f, acc1 = 0.f;
  for (int base = first; base < n_keys; base += kThreads) {
    const int j = base + tid;
    const float s = j < n_keys ? kv_row(a.k_cache, a.k_params, j).dot(q_s, D) : -INFINITY;
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
      const Row v = kv_row(a.v_cache, a.v_params, base + t);
      if (tid < D) acc0 += p_s[t] * v.at(tid);
      if (tid + kThreads < D) acc1 += p_s[t] * v.at(tid + kThreads);
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
  constexpr int kFp8 = static_cast<int>(quant::KvCode::Fp8), kU8 = static_cast<int>(quant::KvCode::U8),
                kU4 = static_cast<int>(quant::KvCode::U4), kU2 = static_cast<int>(quant::KvCode::U2);
  switch (a.kv_t) {
    case DType::F8E4M3: attention_generic_kernel<kFp8><<<grid, kThreads, 0, stream>>>(a); break;
    case DType::U8: attention_generic_kernel<kU8><<<grid, kThreads, 0, stream>>>(a); break;
    case DType::U4: attention_generic_kernel<kU4><<<grid, kThreads, 0, stream>>>(a); break;
    case DType::U2: attention_generic_kernel<kU2><<<grid, kThreads, 0, stream>>>(a); break;
    default: attention_generic_kernel<-1><<<grid, kThreads, 0, stream>>>(a); break;
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace kestrel::backends::cuda
