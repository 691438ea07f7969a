// CUDA_CHECK: every CUDA runtime call's status becomes a kestrel::Error naming the call, file and line.
// Kept free of fmt so .cu files can include it.
#pragma once

#include <cuda_runtime.h>

namespace kestrel::backends::cuda {
[[noreturn, gnu::cold]] void fail_cuda(cudaError_t err, const char* expr, const char* file, int line);
[[noreturn, gnu::cold]] void fail_cublas(int status, const char* expr, const char* file, int line);
}  // namespace kestrel::backends::cuda

#define CUDA_CHECK(expr)                                                             \
  do {                                                                               \
    const cudaError_t kestrel_err_ = (expr);                                         \
    if (kestrel_err_ != cudaSuccess) [[unlikely]]                                    \
      ::kestrel::backends::cuda::fail_cuda(kestrel_err_, #expr, __FILE__, __LINE__); \
  } while (0)

// After a <<<>>> launch: reports bad launch configurations at the call site.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

#define CUBLAS_CHECK(expr)                                                            \
  do {                                                                                \
    const int kestrel_st_ = static_cast<int>(expr);                                   \
    if (kestrel_st_ != 0) [[unlikely]]                                                \
      ::kestrel::backends::cuda::fail_cublas(kestrel_st_, #expr, __FILE__, __LINE__); \
  } while (0)
