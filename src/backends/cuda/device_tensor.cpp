#include "backends/cuda/device_tensor.h"

#include <cstring>

#include "backends/cuda/allocator.h"
#include "backends/cuda/cuda_check.h"
#include "core/dequant.h"
#include "core/error.h"

namespace kestrel::backends::cuda {

namespace {

bool convertible(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16;
}

// Host-side conversion of a whole tensor (row by row through f32, the reference path).
Tensor convert_host(const Tensor& src, DType dtype) {
  Tensor out = Tensor::empty_host(dtype, src.shape);
  const int64_t rows = src.rows(), cols = src.cols();
  std::vector<float> buf(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    dequantize_row(src.dtype, src.row(r), buf.data(), cols);
    quantize_row(dtype, buf.data(), out.row(r), cols);
  }
  return out;
}

}  // namespace

bool cuda_available() {
  static const bool available = [] {
    int n = 0;
    const bool ok = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
    cudaGetLastError();  // a missing driver leaves an error we have now handled
    return ok;
  }();
  return available;
}

Tensor empty_device(DType dtype, std::vector<int64_t> shape, std::shared_ptr<DeviceAllocator> alloc) {
  KS_CHECK(cuda_available(), "no CUDA device is available for a device tensor");
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.device = Device::Cuda;
  for (int64_t d : t.shape) KS_CHECK(d >= 0, "negative dimension in device tensor {}", t.describe());
  if (!alloc) alloc = shared_device_allocator();
  void* p = alloc->allocate(t.nbytes());
  t.storage = std::shared_ptr<void>(p, [alloc](void* q) { alloc->release(q); });
  t.data = p;
  return t;
}

Tensor to_device(const Tensor& host, DType dtype, void* stream) {
  KS_CHECK(host.device == Device::Cpu, "to_device expects a host tensor, got a device one");
  KS_CHECK(host.dtype == dtype || convertible(dtype), "cannot convert {} to {} on upload", host.describe(),
           dtype_name(dtype));
  const Tensor src = host.dtype == dtype ? host : convert_host(host, dtype);
  Tensor dev = empty_device(dtype, host.shape);
  auto s = static_cast<cudaStream_t>(stream);
  CUDA_CHECK(cudaMemcpyAsync(dev.data, src.data, src.nbytes(), cudaMemcpyHostToDevice, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  return dev;
}

Tensor to_host(const Tensor& dev, DType dtype, void* stream) {
  KS_CHECK(dev.device == Device::Cuda, "to_host expects a device tensor, got a host one");
  KS_CHECK(dev.dtype == dtype || (convertible(dev.dtype) && convertible(dtype)), "cannot convert {} to {} on download",
           dev.describe(), dtype_name(dtype));
  Tensor raw = Tensor::empty_host(dev.dtype, dev.shape);
  auto s = static_cast<cudaStream_t>(stream);
  CUDA_CHECK(cudaMemcpyAsync(raw.data, dev.data, dev.nbytes(), cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  return dev.dtype == dtype ? raw : convert_host(raw, dtype);
}

}  // namespace kestrel::backends::cuda
