#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"

namespace kestrel::backends::cuda {

unsigned* device_error_flags() {
  static unsigned* flags = [] {
    unsigned* p = nullptr;
    CUDA_CHECK(cudaMalloc(&p, sizeof(unsigned)));
    CUDA_CHECK(cudaMemset(p, 0, sizeof(unsigned)));
    return p;
  }();
  return flags;
}

unsigned read_and_clear_error_flags(cudaStream_t stream) {
  unsigned host = 0;
  CUDA_CHECK(cudaMemcpyAsync(&host, device_error_flags(), sizeof(unsigned), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  if (host) CUDA_CHECK(cudaMemsetAsync(device_error_flags(), 0, sizeof(unsigned), stream));
  return host;
}

}  // namespace kestrel::backends::cuda
