// Device tensors: allocation through a caching allocator and host<->device copies with dtype
// conversion (weights arrive as f32/f16/bf16 or GGUF blocks and live as bf16 on the GPU).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backends/cuda/allocator.h"
#include "core/tensor.h"

namespace kestrel::backends::cuda {

// True when a CUDA device is usable (cudaGetDeviceCount succeeds with at least one device). Cached.
bool cuda_available();

// Uninitialised device tensor; its storage returns to `alloc` (the process allocator when null) when the
// last view goes.
Tensor empty_device(DType dtype, std::vector<int64_t> shape, std::shared_ptr<DeviceAllocator> alloc = nullptr);

// Copies a host tensor to the device as `dtype`. Same dtype: a raw copy (any type). Otherwise the source
// (f32, f16, bf16 or a GGUF block type) is converted on the host to f32, f16 or bf16. Blocks until the
// copy is done, so `host` may be freed right after.
Tensor to_device(const Tensor& host, DType dtype, void* stream = nullptr);

// Copies a device tensor back as `dtype` (raw when equal; else f32/f16/bf16 <-> f32/f16/bf16). Synchronises.
Tensor to_host(const Tensor& dev, DType dtype, void* stream = nullptr);

}  // namespace kestrel::backends::cuda
