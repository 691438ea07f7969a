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
// The 8-bit GEMM of W8A8 codes xq [M, K] and wq [N, K] of in_t (I8 or F8E4M3). fp8 with x_scales and
// w_scales: y (bf16/f32) = (xq . wq^T) * x_scales[m] * w_scales[n], scaled by cuBLASLt. Otherwise unscaled
// into y as an accumulator, i32 for int8 and f32 for fp8 (y_t ignored), for an epilogue to scale. False
// when cuBLASLt offers no algorithm for it (remembered per shape).
bool cublaslt_matmul_w8(CudaLane& lane, DType in_t, const void* xq, const void* wq, const float* x_scales,
                        const float* w_scales, DType y_t, void* y, int64_t M, int64_t N, int64_t K);
// How many algorithms the heuristic offers for the shape (at most 8).
int cublaslt_candidates(CudaLane& lane, int64_t M, int64_t N, int64_t K, DType y_t);

}  // namespace kestrel::backends::cuda
