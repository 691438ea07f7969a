// The encoder's own ops on the GPU (BERT-family models, model/encoder.h): LayerNorm, the exact GELU and
// bidirectional attention over stacked sequences, for f32 or bf16 activations with f32 arithmetic.
//
// Encoder batches are many short sequences (a sentence is tens of tokens), so attention gives each thread
// one query row with its q and output in registers, and a block a tile of up to kQueries rows of one
// sequence and head; keys and values stream through shared memory kKeys at a time with an online
// softmax. The sequences travel in the launch's parameters (up to kItems tiles a launch), not in a device
// buffer, so a batch needs no upload.
#include <stdexcept>
#include <vector>

#include "backends/cuda/common.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"

namespace kestrel::backends::cuda {
namespace {

constexpr int kNormThreads = 256;

// Two passes over the row for the mean and the centered variance (a residual stream's mean can be large:
// E[x^2] - E[x]^2 would cancel), a third writes. Each thread reads back only its own elements, so y may
// alias x.
template <typename T>
__global__ void __launch_bounds__(kNormThreads)
    layernorm_kernel(const T* x, const float* w, const float* b, float eps, T* y, int64_t dim) {
  const T* xr = x + blockIdx.x * dim;
  T* yr = y + blockIdx.x * dim;
  float s = 0.f;
  for (int64_t i = threadIdx.x; i < dim; i += kNormThreads) s += to_f32(xr[i]);
  const float mean = block_sum<kNormThreads>(s) / static_cast<float>(dim);
  __syncthreads();  // block_sum's partials are reused below
  float ss = 0.f;
  for (int64_t i = threadIdx.x; i < dim; i += kNormThreads) {
    const float d = to_f32(xr[i]) - mean;
    ss += d * d;
  }
  const float inv = rsqrtf(block_sum<kNormThreads>(ss) / static_cast<float>(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += kNormThreads)
    yr[i] = from_f32<T>((to_f32(xr[i]) - mean) * inv * w[i] + b[i]);
}

template <typename T>
__global__ void gelu_kernel(const T* x, T* y, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = to_f32(x[i]);
    y[i] = from_f32<T>(0.5f * v * (1.f + erff(v * 0.70710678118654752f)));
  }
}

constexpr int kQueries = 128;  // query rows a block (one per thread)
constexpr int kKeys = 32;      // keys staged in shared memory at a time

// One block's work: rows [q0, q0 + kQueries) of the sequence at rows [begin, begin + len).
struct AttnItem {
  int begin, len, q0;
};
constexpr int kItems = 1024;  // 12 KB of parameters, under the 32 KB a launch may take
struct AttnItems {
  AttnItem item[kItems];
};

template <typename T, int DMAX>
__global__ void __launch_bounds__(kQueries)
    encoder_attention_kernel(const T* __restrict__ qkv, const int* __restrict__ key_mask, T* __restrict__ out,
                             const __grid_constant__ AttnItems items, int H, int D, float scale_log2) {
  __shared__ float ks[kKeys][DMAX], vs[kKeys][DMAX];
  __shared__ bool kmask[kKeys];
  const AttnItem it = items.item[blockIdx.x];
  const int h = blockIdx.y, row_len = 3 * H * D;
  const int qi = it.q0 + threadIdx.x;  // the query's index in its sequence
  const bool active = qi < it.len;
  float q[DMAX], o[DMAX];
  const T* qr = qkv + static_cast<int64_t>(it.begin + (active ? qi : 0)) * row_len + h * D;
#pragma unroll
  for (int d = 0; d < DMAX; ++d) {
    q[d] = d < D ? to_f32(qr[d]) * scale_log2 : 0.f;  // scores in log2 units: exp2 below
    o[d] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  for (int k0 = 0; k0 < it.len; k0 += kKeys) {
    const int nk = min(kKeys, it.len - k0);
    __syncthreads();  // the previous tile is consumed
    for (int e = threadIdx.x; e < kKeys * DMAX; e += kQueries) {
      const int j = e / DMAX, d = e % DMAX;
      const bool in = j < nk && d < D;
      const int64_t at = static_cast<int64_t>(it.begin + k0 + j) * row_len + H * D + h * D + d;
      ks[j][d] = in ? to_f32(qkv[at]) : 0.f;
      vs[j][d] = in ? to_f32(qkv[at + H * D]) : 0.f;
    }
    if (threadIdx.x < kKeys)
      kmask[threadIdx.x] = threadIdx.x < nk && (!key_mask || key_mask[it.begin + k0 + threadIdx.x] != 0);
    __syncthreads();
    if (!active) continue;
    for (int j = 0; j < nk; ++j) {
      if (!kmask[j]) continue;
      float s = 0.f;
#pragma unroll
      for (int d = 0; d < DMAX; ++d) s = fmaf(q[d], ks[j][d], s);
      if (s > m) {  // a new maximum rescales what came before
        const float c = exp2f(m - s);
        l *= c;
#pragma unroll
        for (int d = 0; d < DMAX; ++d) o[d] *= c;
        m = s;
      }
      const float p = exp2f(s - m);
      l += p;
#pragma unroll
      for (int d = 0; d < DMAX; ++d) o[d] = fmaf(p, vs[j][d], o[d]);
    }
  }
  if (!active) return;
  const float inv = l > 0.f ? 1.f / l : 0.f;  // no key to attend to: zeros
  T* orow = out + (static_cast<int64_t>(it.begin + qi) * H + h) * D;
#pragma unroll
  for (int d = 0; d < DMAX; ++d)
    if (d < D) orow[d] = from_f32<T>(o[d] * inv);
}

template <typename T, int DMAX>
void attention_launches(const EncoderAttentionLaunch& a, cudaStream_t s) {
  AttnItems items;
  int n = 0;
  auto flush = [&] {
    if (n == 0) return;
    encoder_attention_kernel<T, DMAX><<<dim3(n, a.H), kQueries, 0, s>>>(static_cast<const T*>(a.qkv), a.key_mask,
                                                                        static_cast<T*>(a.out), items, a.H, a.D,
                                                                        a.scale * 1.4426950408889634f);
    CUDA_CHECK(cudaGetLastError());
    n = 0;
  };
  for (int i = 0; i < a.n_seqs; ++i)
    for (int q0 = 0; q0 < a.seqs[i].len; q0 += kQueries) {
      items.item[n++] = {a.seqs[i].begin, a.seqs[i].len, q0};
      if (n == kItems) flush();
    }
  flush();
}

template <typename T>
void attention_typed(const EncoderAttentionLaunch& a, cudaStream_t s) {
  if (a.D <= 32)
    attention_launches<T, 32>(a, s);
  else if (a.D <= 64)
    attention_launches<T, 64>(a, s);
  else
    attention_launches<T, kEncoderMaxHeadDim>(a, s);
}

}  // namespace

void launch_layernorm(DType t, const void* x, const float* w, const float* b, float eps, void* y, int64_t rows,
                      int64_t dim, cudaStream_t s) {
  if (rows == 0 || dim == 0) return;
  const dim3 grid(static_cast<unsigned>(rows));
  if (t == DType::BF16)
    layernorm_kernel<bf16>
        <<<grid, kNormThreads, 0, s>>>(static_cast<const bf16*>(x), w, b, eps, static_cast<bf16*>(y), dim);
  else
    layernorm_kernel<float>
        <<<grid, kNormThreads, 0, s>>>(static_cast<const float*>(x), w, b, eps, static_cast<float*>(y), dim);
  CUDA_CHECK(cudaGetLastError());
}

void launch_gelu(DType t, const void* x, void* y, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  const unsigned grid = grid_for(n, 256, 65535u);
  if (t == DType::BF16)
    gelu_kernel<bf16><<<grid, 256, 0, s>>>(static_cast<const bf16*>(x), static_cast<bf16*>(y), n);
  else
    gelu_kernel<float><<<grid, 256, 0, s>>>(static_cast<const float*>(x), static_cast<float*>(y), n);
  CUDA_CHECK(cudaGetLastError());
}

void launch_encoder_attention(const EncoderAttentionLaunch& a, cudaStream_t s) {
  if (a.n_seqs == 0 || a.H == 0) return;
  if (a.D < 1 || a.D > kEncoderMaxHeadDim)
    throw std::invalid_argument("launch_encoder_attention: head_dim outside 1..kEncoderMaxHeadDim");
  if (a.act_t == DType::BF16)
    attention_typed<bf16>(a, s);
  else
    attention_typed<float>(a, s);
}

}  // namespace kestrel::backends::cuda
