// The runtime seam: one execution lane on one device. A lane owns what two lanes must not share — its
// stream (queue of work), its caching allocator, its library handles and workspaces, the row-error words
// its kernels raise — so two lanes in one process (prefill and decode on SM partitions of one GPU, one lane
// per GPU for tensor parallelism) run side by side. Ops reach their lane through ops::Context::runtime;
// the engine uses this interface only and never a backend's headers. Backends implement it
// (backends/cpu/runtime.h, backends/cuda/runtime.h); backends/backends.h creates lanes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <typeindex>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"

namespace kestrel::ops {

// A point in a lane's queue of work.
class Event {
 public:
  virtual ~Event() = default;
  virtual bool done() const = 0;  // has the lane reached it?
  virtual void wait() const = 0;  // blocks the calling thread until it has
  // Device milliseconds from `earlier` to this event (both recorded with timing = true).
  virtual double ms_since(const Event& earlier) const = 0;
};

// Work recorded once and replayed with one call (CUDA graphs). Every buffer it was recorded over must
// outlive it.
class Graph {
 public:
  virtual ~Graph() = default;
  virtual void launch() = 0;
};

// Host memory the lane can copy from and to asynchronously (page-locked on CUDA).
class HostBuffer {
 public:
  virtual ~HostBuffer() = default;
  virtual void* data() const = 0;
  virtual size_t size() const = 0;
};

// Kernels cannot throw: they record bad inputs they skipped (an out-of-range token id or KV slot) as flag
// bits in one word per token row of the step, row i in words[min(i, capacity - 1)].
enum RowError : unsigned { kRowErrTokenId = 1u, kRowErrKvSlot = 2u };
struct ErrorRows {
  unsigned* words = nullptr;  // on the lane's device
  int capacity = 0;
};

struct LaneOptions {
  int device_index = 0;  // which GPU
};

class Runtime {
 public:
  virtual ~Runtime() = default;

  virtual Device device() const = 0;
  virtual std::string description() const = 0;  // "NVIDIA H100 80GB HBM3, 132 SMs, 79 GiB"
  // Multiprocessors this lane may fill (grid sizing); the CPU lane reports its threads.
  virtual int sm_count() const = 0;
  // The backend's own queue handle (cudaStream_t); null on the CPU. For backend code only.
  virtual void* native_stream() const = 0;
  // Whether queued work runs behind the host's back (CUDA) or is done when the call returns (CPU): only
  // then is there anything to gain from planning the next step while one runs.
  virtual bool asynchronous() const = 0;

  // Memory on the lane's device. upload/download wait for the copy; copy_async/fill_async are ordered on
  // the lane's queue (host memory must then come from host_buffer()).
  virtual Tensor allocate(DType dtype, std::vector<int64_t> shape) = 0;
  virtual Tensor upload(const Tensor& host) = 0;
  virtual void download(const Tensor& src, Tensor& host_dst) = 0;
  virtual std::unique_ptr<HostBuffer> host_buffer(size_t bytes) = 0;
  virtual void copy_async(void* dst, const void* src, size_t bytes) = 0;
  virtual void fill_async(void* dst, int byte, size_t bytes) = 0;

  virtual std::unique_ptr<Event> record(bool timing = false) = 0;
  virtual void synchronize() = 0;
  // Whether capture() is available (CUDA); the body's work is recorded, not run.
  virtual bool graphs_supported() const = 0;
  virtual std::unique_ptr<Graph> capture(const std::function<void()>& body) = 0;

  // Row-error words: at least `rows` of them (growing moves them: see generation()), zero until a kernel
  // raises one. take_row_errors() waits for the lane, returns the first `rows` words and clears them.
  virtual ErrorRows error_rows(int rows) = 0;
  virtual std::vector<unsigned> take_row_errors(int rows) = 0;

  // The device-to-device copy rate (read + write bytes per second, GB/s): the ceiling decode is held to.
  virtual double copy_bandwidth_gbps(size_t bytes, int iters) = 0;

  // Changes whenever a buffer the lane owns moves (a workspace grew): graphs recorded over the old one
  // must be recorded again. Lane state that reallocates a workspace calls bump_generation().
  uint64_t generation() const { return generation_; }
  void bump_generation() { ++generation_; }

  // Per-lane state of a backend (library handles, workspaces), created on first use as T(*this).
  template <typename T>
  T& state() {
    std::lock_guard lock(state_mu_);
    std::shared_ptr<void>& slot = states_[std::type_index(typeid(T))];
    if (!slot) slot = std::make_shared<T>(*this);
    return *static_cast<T*>(slot.get());
  }

 protected:
  // Derived destructors call this first, while their stream and allocator still exist.
  void clear_state() {
    std::lock_guard lock(state_mu_);
    states_.clear();
  }

 private:
  uint64_t generation_ = 0;
  std::mutex state_mu_;
  std::unordered_map<std::type_index, std::shared_ptr<void>> states_;
};

}  // namespace kestrel::ops
