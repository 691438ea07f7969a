// Elementwise kernels: add, silu_mul / gelu_mul, swiglu / geglu (the same over a fused gate/up output) and the
// bias epilogue. Memory-bound:
// 16-byte vectors per thread when every operand is aligned, a scalar loop otherwise.
#include "backends/cuda/common.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"

namespace kestrel::backends::cuda {
namespace {

struct AddOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct SiluMulOp {
  __device__ float operator()(float g, float u) const { return g / (1.f + __expf(-g)) * u; }
};
struct GeluMulOp {  // GELU, tanh approximation (transformers' gelu_pytorch_tanh)
  __device__ float operator()(float g, float u) const {
    return 0.5f * g * (1.f + tanhf(0.7978845608f * fmaf(0.044715f * g * g, g, g))) * u;
  }
};

template <typename T, typename Op>
__global__ void binary_vec_kernel(const T* a, const T* b, T* y, int64_t n_vec, Op op) {
  constexpr int N = Vec16<T>::N;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n_vec; i += int64_t{gridDim.x} * blockDim.x) {
    const Vec16<T> va = load16(a + i * N), vb = load16(b + i * N);
    Vec16<T> vy;
#pragma unroll
    for (int j = 0; j < N; ++j) vy.v[j] = from_f32<T>(op(to_f32(va.v[j]), to_f32(vb.v[j])));
    store16(y + i * N, vy);
  }
}

template <typename T, typename Op>
__global__ void binary_scalar_kernel(const T* a, const T* b, T* y, int64_t begin, int64_t n, Op op) {
  for (int64_t i = begin + blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    y[i] = from_f32<T>(op(to_f32(a[i]), to_f32(b[i])));
}

template <typename T, typename Op>
void launch_binary(const void* a_, const void* b_, void* y_, int64_t n, Op op, cudaStream_t s) {
  if (n == 0) return;
  auto a = static_cast<const T*>(a_);
  auto b = static_cast<const T*>(b_);
  auto y = static_cast<T*>(y_);
  constexpr int N = Vec16<T>::N;
  constexpr int kThreads = 256;
  int64_t done = 0;
  if (aligned16(a) && aligned16(b) && aligned16(y)) {
    const int64_t n_vec = n / N;
    if (n_vec) {
      binary_vec_kernel<<<grid_for(n_vec, kThreads), kThreads, 0, s>>>(a, b, y, n_vec, op);
      CUDA_CHECK_LAUNCH();
    }
    done = n_vec * N;
  }
  if (done < n) {
    binary_scalar_kernel<<<grid_for(n - done, kThreads), kThreads, 0, s>>>(a, b, y, done, n, op);
    CUDA_CHECK_LAUNCH();
  }
}

template <typename Op>
void dispatch_binary(DType t, const void* a, const void* b, void* y, int64_t n, Op op, cudaStream_t s) {
  if (t == DType::BF16)
    launch_binary<bf16>(a, b, y, n, op, s);
  else
    launch_binary<float>(a, b, y, n, op, s);
}

// One thread per 16-byte vector of y (vec) or per element; gate and up sit F columns apart in a row.
template <typename T, typename Op>
__global__ void gated_kernel(const T* gu, T* y, int64_t rows, int64_t F, bool vec, Op op) {
  pdl_wait();  // a programmatic dependent (launch.cuh): gu is the previous kernel's output
  pdl_launch_dependents();
  constexpr int N = Vec16<T>::N;
  const int64_t per_row = vec ? F / N : F, total = rows * per_row;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / per_row, c = i % per_row;
    const T* g = gu + r * 2 * F;
    if (vec) {
      const Vec16<T> vg = load16(g + c * N), vu = load16(g + F + c * N);
      Vec16<T> vy;
#pragma unroll
      for (int j = 0; j < N; ++j) vy.v[j] = from_f32<T>(op(to_f32(vg.v[j]), to_f32(vu.v[j])));
      store16(y + r * F + c * N, vy);
    } else {
      y[r * F + c] = from_f32<T>(op(to_f32(g[c]), to_f32(g[F + c])));
    }
  }
}

template <typename T, typename Op>
void launch_gated_typed(const void* gu_, void* y_, int64_t rows, int64_t F, Op op, cudaStream_t s) {
  auto gu = static_cast<const T*>(gu_);
  auto y = static_cast<T*>(y_);
  const bool vec = F % Vec16<T>::N == 0 && aligned16(gu) && aligned16(y);
  const int64_t work = rows * (vec ? F / Vec16<T>::N : F);
  launch_dependent(gated_kernel<T, Op>, dim3(grid_for(work, 256)), dim3(256), 0, s, gu, y, rows, F, vec, op);
}

template <typename Op>
void dispatch_gated(DType t, const void* gate_up, void* y, int64_t rows, int64_t F, Op op, cudaStream_t s) {
  if (rows == 0 || F == 0) return;
  if (t == DType::BF16)
    launch_gated_typed<bf16>(gate_up, y, rows, F, op, s);
  else
    launch_gated_typed<float>(gate_up, y, rows, F, op, s);
}

template <typename T>
__global__ void add_bias_kernel(T* y, const float* bias, int64_t total, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x)
    y[i] = from_f32<T>(to_f32(y[i]) + bias[i % n]);
}

}  // namespace

void launch_add(DType t, const void* a, const void* b, void* y, int64_t n, cudaStream_t s) {
  dispatch_binary(t, a, b, y, n, AddOp{}, s);
}

void launch_act_mul(DType t, GatedAct act, const void* gate, const void* up, void* y, int64_t n, cudaStream_t s) {
  if (act == GatedAct::Silu)
    dispatch_binary(t, gate, up, y, n, SiluMulOp{}, s);
  else
    dispatch_binary(t, gate, up, y, n, GeluMulOp{}, s);
}

void launch_gated(DType t, GatedAct act, const void* gate_up, void* y, int64_t rows, int64_t F, cudaStream_t s) {
  if (act == GatedAct::Silu)
    dispatch_gated(t, gate_up, y, rows, F, SiluMulOp{}, s);
  else
    dispatch_gated(t, gate_up, y, rows, F, GeluMulOp{}, s);
}

void launch_add_bias(DType t, void* y, const float* bias, int64_t rows, int64_t n, cudaStream_t s) {
  const int64_t total = rows * n;
  if (total == 0) return;
  if (t == DType::BF16)
    add_bias_kernel<<<grid_for(total, 256), 256, 0, s>>>(static_cast<bf16*>(y), bias, total, n);
  else
    add_bias_kernel<<<grid_for(total, 256), 256, 0, s>>>(static_cast<float*>(y), bias, total, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace kestrel::backends::cuda
