// Decode-sized products with GGUF-typed weights (M <= kQmvMaxM): y[M, N] = x[M, K] . w[N, K]^T, weights
// decoded on the fly in f32 (core/quant_groups.h, exactly the reference dequantizer's values) and never
// written anywhere. One block per output row; its threads take the row's 8-element groups in turn, so a
// warp reads 32 neighbouring groups (a K-quant super-block, or eight 32-element blocks) and a thread keeps
// several groups' loads in flight. Every row accumulates in the same order for any M: the kernel is batch
// invariant up to kQmvMaxM rows, but not equal to the dequantizing GEMMs used beyond.
#include <stdexcept>

#include "backends/cuda/common.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/weight_rows.cuh"

namespace kestrel::backends::cuda {
namespace {

constexpr int kThreads = 128;

template <class Block, int MAXM, typename Ty>
__global__ void __launch_bounds__(kThreads)
    qmv_kernel(const bf16* __restrict__ x, const void* __restrict__ w, const float* __restrict__ bias,
               Ty* __restrict__ y, int M, int N, int K) {
  const int n = blockIdx.x;
  const Block* row = QuantRows<Block>::row(w, n, K);
  const int groups = K / quant::kGroup;
  float acc[MAXM] = {};
#pragma unroll 4
  for (int g = threadIdx.x; g < groups; g += kThreads) {
    float f[quant::kGroup];
    quant::decode_group(row, g, f);
#pragma unroll
    for (int m = 0; m < MAXM; ++m) {
      if (m >= M) break;
      const Vec16<bf16> xv = load16(x + static_cast<size_t>(m) * K + quant::kGroup * g);
#pragma unroll
      for (int i = 0; i < quant::kGroup; ++i) acc[m] = fmaf(f[i], __bfloat162float(xv.v[i]), acc[m]);
    }
  }
  __shared__ float partial[kThreads / 32][MAXM];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int m = 0; m < MAXM; ++m) {
    float v = acc[m];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) partial[warp][m] = v;
  }
  __syncthreads();
  if (threadIdx.x < M) {
    const int m = threadIdx.x;
    float v = 0.f;
#pragma unroll
    for (int ww = 0; ww < kThreads / 32; ++ww) v += partial[ww][m];
    y[static_cast<size_t>(m) * N + n] = from_f32<Ty>(v + (bias ? bias[n] : 0.f));
  }
}

template <class Block, int MAXM>
void launch_for(const void* x, const void* w, const float* bias, DType y_t, void* y, int M, int N, int K,
                cudaStream_t s) {
  auto xb = static_cast<const bf16*>(x);
  if (y_t == DType::BF16)
    qmv_kernel<Block, MAXM, bf16><<<N, kThreads, 0, s>>>(xb, w, bias, static_cast<bf16*>(y), M, N, K);
  else
    qmv_kernel<Block, MAXM, float><<<N, kThreads, 0, s>>>(xb, w, bias, static_cast<float*>(y), M, N, K);
}

}  // namespace

void launch_qmv(const void* x, DType w_t, const void* w, const float* bias, DType y_t, void* y, int M, int N, int K,
                cudaStream_t s) {
  if (M == 0 || N == 0) return;
  const bool known = quant::visit_weight_block(w_t, [&]<class Block>(const Block*) {
    if (M == 1)
      launch_for<Block, 1>(x, w, bias, y_t, y, M, N, K, s);
    else
      launch_for<Block, kQmvMaxM>(x, w, bias, y_t, y, M, N, K, s);
  });
  if (!known) throw std::invalid_argument("launch_qmv: not a GGUF weight type");
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace kestrel::backends::cuda
