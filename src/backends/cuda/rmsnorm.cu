// RMSNorm, alone or after the residual add: one block per row; pass 1 sums squares (f32), pass 2 scales. The row is
// re-read in pass 2 (from L1/L2: rows are at most a few tens of KB).
#include "backends/cuda/common.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"

namespace kestrel::backends::cuda {
namespace {

constexpr int kThreads = 256;

// With `r`, first x += r (rounded to T and stored: the residual stream) and the norm is taken of the
// stored sum, exactly as a separate add followed by rmsnorm would. Each thread re-reads in pass 2 only
// the elements it wrote in pass 1, so y may alias r.
template <typename T, typename W>
__global__ void __launch_bounds__(kThreads)
    rmsnorm_kernel(T* x, const T* r, const W* w, float eps, T* y, int64_t dim, bool vec) {
  pdl_wait();  // a programmatic dependent (launch.cuh): x and r come from the kernels before
  pdl_launch_dependents();
  T* xr = x + blockIdx.x * dim;
  const T* rr = r ? r + blockIdx.x * dim : nullptr;
  T* yr = y + blockIdx.x * dim;
  constexpr int N = Vec16<T>::N;
  float ss = 0.f;
  if (vec) {
    for (int64_t i = threadIdx.x; i < dim / N; i += kThreads) {
      Vec16<T> v = load16(xr + i * N);
      if (rr) {
        const Vec16<T> d = load16(rr + i * N);
#pragma unroll
        for (int j = 0; j < N; ++j) v.v[j] = from_f32<T>(to_f32(v.v[j]) + to_f32(d.v[j]));
        store16(xr + i * N, v);
      }
#pragma unroll
      for (int j = 0; j < N; ++j) ss += to_f32(v.v[j]) * to_f32(v.v[j]);
    }
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += kThreads) {
      if (rr) xr[i] = from_f32<T>(to_f32(xr[i]) + to_f32(rr[i]));
      ss += to_f32(xr[i]) * to_f32(xr[i]);
    }
  }
  const float inv = rsqrtf(block_sum<kThreads>(ss) / static_cast<float>(dim) + eps);
  if (vec) {
    for (int64_t i = threadIdx.x; i < dim / N; i += kThreads) {
      const Vec16<T> v = load16(xr + i * N);
      Vec16<T> o;
#pragma unroll
      for (int j = 0; j < N; ++j) o.v[j] = from_f32<T>(to_f32(v.v[j]) * inv * to_f32(w[i * N + j]));
      store16(yr + i * N, o);
    }
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += kThreads) yr[i] = from_f32<T>(to_f32(xr[i]) * inv * to_f32(w[i]));
  }
}

template <typename T, typename W>
void launch_typed(void* x, const void* r, const void* w, float eps, void* y, int64_t rows, int64_t dim,
                  cudaStream_t s) {
  const bool vec = dim % Vec16<T>::N == 0 && aligned16(x) && aligned16(y) && (!r || aligned16(r));
  launch_dependent(rmsnorm_kernel<T, W>, dim3(static_cast<unsigned>(rows)), dim3(kThreads), 0, s, static_cast<T*>(x),
                   static_cast<const T*>(r), static_cast<const W*>(w), eps, static_cast<T*>(y), dim, vec);
}

void launch(DType t, void* x, const void* r, DType w_t, const void* w, float eps, void* y, int64_t rows, int64_t dim,
            cudaStream_t s) {
  if (rows == 0) return;
  if (t == DType::BF16) {
    if (w_t == DType::BF16)
      launch_typed<bf16, bf16>(x, r, w, eps, y, rows, dim, s);
    else
      launch_typed<bf16, float>(x, r, w, eps, y, rows, dim, s);
  } else {
    if (w_t == DType::BF16)
      launch_typed<float, bf16>(x, r, w, eps, y, rows, dim, s);
    else
      launch_typed<float, float>(x, r, w, eps, y, rows, dim, s);
  }
}

}  // namespace

void launch_rmsnorm(DType t, const void* x, DType w_t, const void* w, float eps, void* y, int64_t rows, int64_t dim,
                    cudaStream_t s) {
  // Without a residual the kernel only reads x.
  launch(t, const_cast<void*>(x), nullptr, w_t, w, eps, y, rows, dim, s);
}

void launch_add_rmsnorm(DType t, void* x, const void* r, DType w_t, const void* w, float eps, void* y, int64_t rows,
                        int64_t dim, cudaStream_t s) {
  launch(t, x, r, w_t, w, eps, y, rows, dim, s);
}

}  // namespace kestrel::backends::cuda
