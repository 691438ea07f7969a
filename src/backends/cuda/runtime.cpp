#include "backends/cuda/runtime.h"

#include <algorithm>
#include <mutex>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device_tensor.h"
#include "core/error.h"

namespace kestrel::backends::cuda {
namespace {

class CudaEvent final : public ops::Event {
 public:
  CudaEvent(cudaStream_t s, bool timing) {
    CUDA_CHECK(cudaEventCreateWithFlags(&e_, timing ? cudaEventDefault : cudaEventDisableTiming));
    const cudaError_t err = cudaEventRecord(e_, s);
    if (err != cudaSuccess) cudaEventDestroy(e_);
    CUDA_CHECK(err);
  }
  ~CudaEvent() override { cudaEventDestroy(e_); }
  bool done() const override {
    const cudaError_t err = cudaEventQuery(e_);
    if (err == cudaErrorNotReady) return false;
    CUDA_CHECK(err);
    return true;
  }
  void wait() const override { CUDA_CHECK(cudaEventSynchronize(e_)); }
  double ms_since(const ops::Event& earlier) const override {
    const auto* e = dynamic_cast<const CudaEvent*>(&earlier);
    KS_CHECK(e != nullptr, "ms_since: events of different kinds of lane");
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, e->e_, e_));
    return ms;
  }

 private:
  cudaEvent_t e_ = nullptr;
};

class CudaGraph final : public ops::Graph {
 public:
  CudaGraph(cudaGraphExec_t exec, cudaStream_t s) : exec_(exec), s_(s) {}
  ~CudaGraph() override { cudaGraphExecDestroy(exec_); }
  void launch() override { CUDA_CHECK(cudaGraphLaunch(exec_, s_)); }

 private:
  cudaGraphExec_t exec_;
  cudaStream_t s_;
};

class PinnedBuffer final : public ops::HostBuffer {
 public:
  explicit PinnedBuffer(size_t bytes) : n_(bytes) { CUDA_CHECK(cudaMallocHost(&p_, std::max<size_t>(bytes, 1))); }
  ~PinnedBuffer() override { cudaFreeHost(p_); }
  void* data() const override { return p_; }
  size_t size() const override { return n_; }

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};

constexpr int kMinErrorRows = 1024;

class Lane final : public CudaLane {
 public:
  Lane(const ops::LaneOptions& o, std::shared_ptr<DeviceAllocator> alloc)
      : device_(o.device_index), alloc_(std::move(alloc)) {
    KS_CHECK(cuda_available(), "no CUDA device is available");
    int n = 0;
    CUDA_CHECK(cudaGetDeviceCount(&n));
    KS_CHECK(o.device_index >= 0 && o.device_index < n, "CUDA device {} does not exist ({} visible)", o.device_index,
             n);
    CUDA_CHECK(cudaSetDevice(device_));
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms_, cudaDevAttrMultiProcessorCount, device_));
    grow_errors(kMinErrorRows);
  }
  ~Lane() override {
    cudaStreamSynchronize(stream_);
    clear_state();
    errors_ = Tensor{};
    cudaStreamDestroy(stream_);
  }

  Device device() const override { return Device::Cuda; }
  std::string description() const override {
    cudaDeviceProp p{};
    CUDA_CHECK(cudaGetDeviceProperties(&p, device_));
    return fmt::format("{}, {} SMs, {} GiB", p.name, p.multiProcessorCount, p.totalGlobalMem >> 30);
  }
  int sm_count() const override { return sms_; }
  void* native_stream() const override { return stream_; }
  bool asynchronous() const override { return true; }
  cudaStream_t stream() const override { return stream_; }
  DeviceAllocator& allocator() override { return *alloc_; }
  const std::shared_ptr<DeviceAllocator>& allocator_ptr() const override { return alloc_; }

  Tensor allocate(DType dtype, std::vector<int64_t> shape) override {
    return empty_device(dtype, std::move(shape), alloc_);
  }
  Tensor upload(const Tensor& host) override {
    KS_CHECK(host.device == Device::Cpu, "upload expects a host tensor");
    Tensor dev = allocate(host.dtype, host.shape);
    CUDA_CHECK(cudaMemcpyAsync(dev.data, host.data, host.nbytes(), cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    return dev;
  }
  void download(const Tensor& src, Tensor& dst) override {
    KS_CHECK(src.device == Device::Cuda, "download from a tensor that is not on the device");
    CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, src.nbytes(), cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  std::unique_ptr<ops::HostBuffer> host_buffer(size_t bytes) override { return std::make_unique<PinnedBuffer>(bytes); }
  void copy_async(void* dst, const void* src, size_t bytes) override {
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream_));
  }
  void fill_async(void* dst, int byte, size_t bytes) override {
    if (bytes) CUDA_CHECK(cudaMemsetAsync(dst, byte, bytes, stream_));
  }

  std::unique_ptr<ops::Event> record(bool timing) override { return std::make_unique<CudaEvent>(stream_, timing); }
  void synchronize() override { CUDA_CHECK(cudaStreamSynchronize(stream_)); }
  bool graphs_supported() const override { return true; }
  std::unique_ptr<ops::Graph> capture(const std::function<void()>& body) override {
    // Relaxed: the body may touch the caching allocator; every buffer it uses must outlive the graph.
    CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed));
    cudaGraph_t graph = nullptr;
    try {
      body();
    } catch (...) {
      cudaStreamEndCapture(stream_, &graph);  // leave the stream usable before reporting the body's error
      if (graph) cudaGraphDestroy(graph);
      cudaGetLastError();
      throw;
    }
    CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    CUDA_CHECK(err);
    return std::make_unique<CudaGraph>(exec, stream_);
  }

  ops::ErrorRows error_rows(int rows) override {
    if (rows > errors_.numel()) grow_errors(rows);
    return {errors_.ptr<unsigned>(), static_cast<int>(errors_.numel())};
  }
  std::vector<unsigned> take_row_errors(int rows) override {
    rows = std::min<int>(rows, static_cast<int>(errors_.numel()));
    std::vector<unsigned> out(std::max(rows, 0), 0);
    if (rows <= 0) return out;
    CUDA_CHECK(cudaMemcpyAsync(out.data(), errors_.data, rows * sizeof(unsigned), cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    if (std::any_of(out.begin(), out.end(), [](unsigned w) { return w != 0; }))
      fill_async(errors_.data, 0, errors_.nbytes());
    return out;
  }

  double copy_bandwidth_gbps(size_t bytes, int iters) override {
    const Tensor src = allocate(DType::I8, {static_cast<int64_t>(bytes)});
    const Tensor dst = allocate(DType::I8, {static_cast<int64_t>(bytes)});
    double best = 1e30;
    for (int i = 0; i < iters + 1; ++i) {
      const double ms = time_ms(
          stream_, [&] { CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, bytes, cudaMemcpyDeviceToDevice, stream_)); });
      if (i > 0) best = std::min(best, ms);  // the first copy warms the pages up
    }
    return 2.0 * static_cast<double>(bytes) / (best * 1e-3) / 1e9;
  }

 private:
  void grow_errors(int rows) {
    Tensor t = allocate(DType::I32, {std::max(rows, kMinErrorRows)});
    CUDA_CHECK(cudaMemsetAsync(t.data, 0, t.nbytes(), stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    errors_ = std::move(t);
    bump_generation();
  }

  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  int sms_ = 0;
  std::shared_ptr<DeviceAllocator> alloc_;
  Tensor errors_;  // i32 words, one per token row
};

}  // namespace

std::shared_ptr<ops::Runtime> make_runtime(const ops::LaneOptions& options) {
  static std::mutex mu;
  static bool first = true;
  std::lock_guard lock(mu);
  // The first lane shares the process allocator (device_tensor.h's default); later ones own theirs.
  auto alloc = first ? shared_device_allocator() : std::make_shared<DeviceAllocator>();
  auto lane = std::make_shared<Lane>(options, std::move(alloc));
  first = false;
  return lane;
}

CudaLane& lane_of(const ops::Context& ctx) {
  auto* lane = dynamic_cast<CudaLane*>(ctx.runtime.get());
  KS_CHECK(lane != nullptr,
           "a CUDA op was called with a context that has no CUDA lane; create it with "
           "backends::make_context(Device::Cuda)");
  return *lane;
}

ErrorSink errors_of(const ops::Context& ctx) {
  const ops::ErrorRows e = lane_of(ctx).error_rows(1);
  return {e.words, e.capacity};
}

double time_ms(cudaStream_t s, const std::function<void()>& body) {
  cudaEvent_t a = nullptr, b = nullptr;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  float ms = 0;
  try {
    CUDA_CHECK(cudaEventRecord(a, s));
    body();
    CUDA_CHECK(cudaEventRecord(b, s));
    CUDA_CHECK(cudaEventSynchronize(b));
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  } catch (...) {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    throw;
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms;
}

}  // namespace kestrel::backends::cuda
