// cuBLASLt GEMM for the shapes where tensor-core tiles are full (prefill, large batches):
// y[M, N] = x[M, K] . w[N, K]^T with bf16 inputs, f32 accumulation, bf16 or f32 output.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"

namespace kestrel::backends::cuda {

void cublaslt_matmul(const void* x, const void* w, DType y_t, void* y, int64_t M, int64_t N, int64_t K,
                     cudaStream_t stream);

}  // namespace kestrel::backends::cuda
