// W8A8 (core/w8a8.h) around cuBLASLt's 8-bit GEMMs: each row of x quantized to the weight's type with its own
// scale (one block a row: the absolute maximum, then the codes, computed as the CPU reference does), and,
// where the GEMM cannot apply the per-row and per-channel scales itself (int8: an int32 product), the
// epilogue that does, with the bias.
#include "backends/cuda/common.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "core/w8a8.h"

namespace kestrel::backends::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    quantize_rows_kernel(const T* __restrict__ x, int64_t K, bool fp8, uint8_t* __restrict__ codes,
                         float* __restrict__ scales) {
  const T* xr = x + blockIdx.x * K;
  float m = 0.f;
  for (int64_t i = threadIdx.x; i < K; i += kThreads) m = fmaxf(m, fabsf(to_f32(xr[i])));
  const float absmax = block_reduce<kThreads>(m, MaxOp{});
  const float inv = w8_inv_scale(absmax, fp8);
  uint8_t* cr = codes + blockIdx.x * K;
  for (int64_t i = threadIdx.x; i < K; i += kThreads) cr[i] = w8_code(to_f32(xr[i]), inv, fp8);
  if (threadIdx.x == 0) scales[blockIdx.x] = absmax / w8_qmax(fp8);
}

template <typename Acc, typename Ty>
__global__ void epilogue_kernel(const Acc* __restrict__ acc, const float* __restrict__ x_scales,
                                const float* __restrict__ w_scales, const float* __restrict__ bias, Ty* __restrict__ y,
                                int64_t M, int64_t N) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < M * N;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t m = i / N, n = i % N;
    float v = static_cast<float>(acc[i]) * (x_scales[m] * w_scales[n]);
    if (bias) v += bias[n];
    y[i] = from_f32<Ty>(v);
  }
}

template <typename Acc>
void epilogue_typed(const void* acc, const float* xs, const float* ws, const float* bias, DType y_t, void* y, int64_t M,
                    int64_t N, cudaStream_t s) {
  const unsigned grid = grid_for(M * N, 256, 65535u);
  const auto* a = static_cast<const Acc*>(acc);
  if (y_t == DType::BF16)
    epilogue_kernel<Acc, bf16><<<grid, 256, 0, s>>>(a, xs, ws, bias, static_cast<bf16*>(y), M, N);
  else
    epilogue_kernel<Acc, float><<<grid, 256, 0, s>>>(a, xs, ws, bias, static_cast<float*>(y), M, N);
}

}  // namespace

void launch_w8_quantize_rows(DType x_t, const void* x, int64_t M, int64_t K, DType code_t, void* codes, float* scales,
                             cudaStream_t s) {
  if (M == 0) return;
  const bool fp8 = code_t == DType::F8E4M3;
  auto* c = static_cast<uint8_t*>(codes);
  if (x_t == DType::BF16)
    quantize_rows_kernel<bf16>
        <<<static_cast<unsigned>(M), kThreads, 0, s>>>(static_cast<const bf16*>(x), K, fp8, c, scales);
  else
    quantize_rows_kernel<float>
        <<<static_cast<unsigned>(M), kThreads, 0, s>>>(static_cast<const float*>(x), K, fp8, c, scales);
  CUDA_CHECK(cudaGetLastError());
}

void launch_w8_epilogue(DType acc_t, const void* acc, const float* x_scales, const float* w_scales, const float* bias,
                        DType y_t, void* y, int64_t M, int64_t N, cudaStream_t s) {
  if (M == 0 || N == 0) return;
  if (acc_t == DType::I32)
    epilogue_typed<int32_t>(acc, x_scales, w_scales, bias, y_t, y, M, N, s);
  else
    epilogue_typed<float>(acc, x_scales, w_scales, bias, y_t, y, M, N, s);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace kestrel::backends::cuda
