// Functions compiled for the host and, under nvcc, for the device too: the quantized-block decoders are one
// source for the CPU reference and the CUDA kernels.
#pragma once

#ifdef __CUDACC__
#define KS_HD __host__ __device__ __forceinline__
#else
#define KS_HD inline
#endif
