#include "backends/cuda/allocator.h"

#include <cuda_runtime.h>

#include "core/error.h"

namespace kestrel::backends::cuda {

namespace {
constexpr size_t kSmallLimit = size_t{1} << 20;  // below: 512-byte granules; above: 2 MiB granules
constexpr size_t kSmallGranule = 512;
constexpr size_t kLargeGranule = size_t{2} << 20;
}  // namespace

size_t DeviceAllocator::round_size(size_t bytes) {
  if (bytes == 0) bytes = 1;
  const size_t g = bytes < kSmallLimit ? kSmallGranule : kLargeGranule;
  return (bytes + g - 1) / g * g;
}

void* DeviceAllocator::allocate(size_t bytes) {
  const size_t size = round_size(bytes);
  std::lock_guard lock(mu_);
  // Exact-size reuse keeps fragmentation predictable; model shapes repeat, so hits are the rule.
  if (auto it = free_.find(size); it != free_.end()) {
    void* p = it->second;
    free_.erase(it);
    stats_.in_use += size;
    stats_.peak_in_use = std::max(stats_.peak_in_use, stats_.in_use);
    return p;
  }
  if (stats_.budget && stats_.reserved + size > stats_.budget) free_cached_locked();
  KS_CHECK(!stats_.budget || stats_.reserved + size <= stats_.budget,
           "CUDA memory budget exceeded: {} bytes requested with {} of {} bytes in use; raise the budget or "
           "shrink the batch/context",
           bytes, stats_.in_use, stats_.budget);
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, size);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear the sticky-free error state before retrying
    free_cached_locked();
    err = cudaMalloc(&p, size);
  }
  if (err != cudaSuccess) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    KS_FAIL("cudaMalloc of {} bytes failed ({}): {} of {} bytes free on the device, {} held by Kestrel", size,
            cudaGetErrorString(err), free_b, total_b, stats_.reserved);
  }
  sizes_[p] = size;
  stats_.reserved += size;
  stats_.in_use += size;
  stats_.peak_in_use = std::max(stats_.peak_in_use, stats_.in_use);
  return p;
}

void DeviceAllocator::release(void* p) noexcept {
  if (!p) return;
  std::lock_guard lock(mu_);
  auto it = sizes_.find(p);
  if (it == sizes_.end()) return;  // not ours: ignoring beats corrupting the free list
  stats_.in_use -= it->second;
  free_.emplace(it->second, p);
}

void DeviceAllocator::set_budget(size_t bytes) {
  std::lock_guard lock(mu_);
  stats_.budget = bytes;
  if (bytes && stats_.reserved > bytes) free_cached_locked();
}

void DeviceAllocator::empty_cache() {
  std::lock_guard lock(mu_);
  free_cached_locked();
}

void DeviceAllocator::free_cached_locked() {
  if (free_.empty()) return;
  // Cached blocks may still be read by queued kernels; wait for them before giving memory back.
  cudaDeviceSynchronize();
  for (auto& [size, p] : free_) {
    cudaFree(p);
    sizes_.erase(p);
    stats_.reserved -= size;
  }
  free_.clear();
}

DeviceAllocator::Stats DeviceAllocator::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

DeviceAllocator& device_allocator() {
  return *shared_device_allocator();
}

std::shared_ptr<DeviceAllocator> shared_device_allocator() {
  static auto* a = new std::shared_ptr<DeviceAllocator>(new DeviceAllocator());
  return *a;
}

}  // namespace kestrel::backends::cuda
