// Device tensors: allocation through the caching allocator and host<->device copies with dtype
// conversion (weights arrive as f32/f16/bf16 or GGUF blocks and live as bf16 on the GPU).
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace kestrel::backends::cuda {

// True when a CUDA device is usable (cudaGetDeviceCount succeeds with at least one device). Cached.
bool cuda_available();
// Streaming multiprocessors of the current device (for grid sizing).
int sm_count();

// Uninitialised device tensor; its storage returns to device_allocator() when the last view goes.
Tensor empty_device(DType dtype, std::vector<int64_t> shape);

// Copies a host tensor to the device as `dtype`. Same dtype: a raw copy (any type). Otherwise the source
// (f32, f16, bf16 or a GGUF block type) is converted on the host to f32, f16 or bf16. Blocks until the
// copy is done, so `host` may be freed right after.
Tensor to_device(const Tensor& host, DType dtype, void* stream = nullptr);

// Copies a device tensor back as `dtype` (raw when equal; else f32/f16/bf16 <-> f32/f16/bf16). Synchronises.
Tensor to_host(const Tensor& dev, DType dtype, void* stream = nullptr);

// Errors that kernels can only flag (an out-of-range token id or KV slot): throws kestrel::Error if any
// kernel raised one since the last call, naming it, and clears the flags. Synchronises the stream.
void check_device_errors(void* stream = nullptr);

}  // namespace kestrel::backends::cuda
