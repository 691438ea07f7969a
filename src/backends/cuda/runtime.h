// The CUDA execution lane (ops/runtime.h): its own non-blocking stream, caching allocator, per-lane state
// (cuBLASLt handle and workspace, ...) and row-error words. The first lane of the process shares the
// process allocator; every further lane gets one of its own, because the allocator's reuse is ordered for
// one stream only (allocator.h).
#pragma once

#include <cuda_runtime.h>

#include <memory>

#include "backends/cuda/allocator.h"
#include "backends/cuda/kernels.h"
#include "ops/context.h"
#include "ops/runtime.h"

namespace kestrel::backends::cuda {

class CudaLane : public ops::Runtime {
 public:
  virtual cudaStream_t stream() const = 0;
  virtual DeviceAllocator& allocator() = 0;
  virtual const std::shared_ptr<DeviceAllocator>& allocator_ptr() const = 0;
};

// A new lane on the GPU that options.device_index names. Throws when no CUDA device is usable.
std::shared_ptr<ops::Runtime> make_runtime(const ops::LaneOptions& options);

// For backend code: the CUDA lane of a context (throws a clear error for a context without one).
CudaLane& lane_of(const ops::Context& ctx);
inline cudaStream_t stream_of(const ops::Context& ctx) {
  return lane_of(ctx).stream();
}
// Where the context's kernels record bad token ids and KV slots (never grows: the executor sizes it).
ErrorSink errors_of(const ops::Context& ctx);

// Milliseconds of GPU time for what `body` enqueues on `stream` (events around it; waits for them).
double time_ms(cudaStream_t stream, const std::function<void()>& body);

}  // namespace kestrel::backends::cuda
