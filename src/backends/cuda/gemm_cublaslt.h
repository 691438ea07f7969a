// cuBLASLt GEMM for the shapes where tensor-core tiles are full (prefill, large batches):
// y[M, N] = x[M, K] . w[N, K]^T with bf16 inputs, f32 accumulation, bf16 or f32 output.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"

namespace kestrel::backends::cuda {
class CudaLane;
}

namespace kestrel::backends::cuda {

// Runs on `lane`'s stream with the lane's own cuBLASLt handle, workspace and plan cache, with the
// algorithm the heuristic ranks `candidate`-th for the shape (0: its choice; the others for benchmarks).
void cublaslt_matmul(CudaLane& lane, const void* x, const void* w, DType y_t, void* y, int64_t M, int64_t N, int64_t K,
                     int candidate = 0);
// How many algorithms the heuristic offers for the shape (at most 8).
int cublaslt_candidates(CudaLane& lane, int64_t M, int64_t N, int64_t K, DType y_t);

}  // namespace kestrel::backends::cuda
