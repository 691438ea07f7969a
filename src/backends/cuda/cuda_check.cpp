#include "backends/cuda/cuda_check.h"

#include "core/error.h"

namespace kestrel::backends::cuda {

void fail_cuda(cudaError_t err, const char* expr, const char* file, int line) {
  detail::throw_error(file, line,
                      fmt::format("CUDA error {} ({}) in {}", cudaGetErrorName(err), cudaGetErrorString(err), expr));
}

void fail_cublas(int status, const char* expr, const char* file, int line) {
  detail::throw_error(file, line, fmt::format("cuBLAS error {} in {}", status, expr));
}

}  // namespace kestrel::backends::cuda
