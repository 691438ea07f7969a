// What the engine needs from CUDA beyond the ops, without CUDA types in its headers: a process-wide
// compute stream, stream-captured graphs, pinned staging memory, async copies, event timing and the
// device-to-device copy ceiling that benchmarks hold their GB/s against.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace kestrel::backends::cuda {

// The stream every op of a `--device cuda` context runs on (non-blocking, created once, never destroyed:
// graphs are captured on it, which the legacy default stream does not allow).
void* compute_stream();

// A captured, instantiated CUDA graph. Move-only.
class Graph {
 public:
  Graph() = default;
  ~Graph();
  Graph(Graph&& o) noexcept : exec_(o.exec_) { o.exec_ = nullptr; }
  Graph& operator=(Graph&& o) noexcept;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  // Records what `body` enqueues on `stream` (nothing runs) and instantiates it. The capture is relaxed:
  // the body may touch the caching allocator, but every buffer it uses must outlive the graph.
  static Graph capture(void* stream, const std::function<void()>& body);
  void launch(void* stream) const;
  bool valid() const { return exec_ != nullptr; }

 private:
  void* exec_ = nullptr;  // cudaGraphExec_t
};

// Page-locked host memory, so async uploads really are async (and capturable as memcpy nodes).
class PinnedBuffer {
 public:
  explicit PinnedBuffer(size_t bytes);
  ~PinnedBuffer();
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  void* data() const { return p_; }
  size_t size() const { return n_; }

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};

void copy_async(void* dst, const void* src, size_t bytes, void* stream);  // any direction
void synchronize(void* stream);

// Milliseconds the GPU spends on what `body` enqueues on `stream` (CUDA events around it; synchronises).
double time_ms(void* stream, const std::function<void()>& body);

// The device-to-device copy ceiling: cudaMemcpy of a `bytes` buffer, best of `iters`, counted as bytes
// read plus bytes written per second (GB/s, 1e9).
double copy_bandwidth_gbps(size_t bytes = size_t{1} << 30, int iters = 10);

// "NVIDIA H100 80GB HBM3, 132 SMs" — for benchmark records.
std::string device_description();

// Bumped whenever the decode-attention scratch is reallocated (graphs that captured its old address
// must be re-captured).
uint64_t attention_workspace_generation();

}  // namespace kestrel::backends::cuda
