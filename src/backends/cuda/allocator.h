// A caching device allocator: freed blocks go to a free list keyed by their (rounded) size and are
// handed out again without cudaMalloc/cudaFree, which synchronise the device. An optional budget caps
// the bytes reserved from the driver; when a request would pass it, the cache is emptied first and only
// then does the request fail with a clear kestrel::Error.
//
// Reuse is stream-ordered for ONE stream: a block released while kernels on that stream still read it
// may be handed to the next allocation, whose work is queued behind them on the same stream. Callers
// that use several streams must synchronise before releasing memory another stream still uses.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>

namespace kestrel::backends::cuda {

class DeviceAllocator {
 public:
  struct Stats {
    size_t reserved = 0;  // bytes held from the driver (in use + cached)
    size_t in_use = 0;
    size_t peak_in_use = 0;
    size_t budget = 0;  // 0: no budget
  };

  void* allocate(size_t bytes);  // never returns null; throws kestrel::Error when it can't
  void release(void* p) noexcept;
  void set_budget(size_t bytes);  // 0 removes the budget; an existing excess is trimmed from the cache
  void empty_cache();             // returns every cached (free) block to the driver
  Stats stats() const;

  static size_t round_size(size_t bytes);

 private:
  void free_cached_locked();

  mutable std::mutex mu_;
  std::multimap<size_t, void*> free_;        // rounded size -> block
  std::unordered_map<void*, size_t> sizes_;  // every live or cached block -> rounded size
  Stats stats_;
};

// The process-wide allocator for the current device (never destroyed: device memory may outlive static
// destructors' ordering with the CUDA runtime's own teardown).
DeviceAllocator& device_allocator();
// The same allocator as a shared pointer (tensors keep their allocator alive through it).
std::shared_ptr<DeviceAllocator> shared_device_allocator();

}  // namespace kestrel::backends::cuda
