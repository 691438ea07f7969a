#include "backends/cuda/graph.h"

#include <algorithm>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device_tensor.h"
#include "core/error.h"

namespace kestrel::backends::cuda {

void* compute_stream() {
  static cudaStream_t s = [] {
    KS_CHECK(cuda_available(), "no CUDA device is available");
    cudaStream_t st = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    return st;
  }();
  return s;
}

Graph::~Graph() {
  if (exec_) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
}

Graph& Graph::operator=(Graph&& o) noexcept {
  if (this != &o) {
    if (exec_) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
    exec_ = o.exec_;
    o.exec_ = nullptr;
  }
  return *this;
}

Graph Graph::capture(void* stream, const std::function<void()>& body) {
  auto s = static_cast<cudaStream_t>(stream);
  KS_CHECK(s != nullptr, "CUDA graphs need a created stream, not the default one");
  CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
  cudaGraph_t graph = nullptr;
  try {
    body();
  } catch (...) {
    cudaStreamEndCapture(s, &graph);  // leave the stream usable before reporting the body's error
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    throw;
  }
  CUDA_CHECK(cudaStreamEndCapture(s, &graph));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  CUDA_CHECK(err);
  Graph g;
  g.exec_ = exec;
  return g;
}

void Graph::launch(void* stream) const {
  KS_CHECK(exec_ != nullptr, "launching an empty CUDA graph");
  CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), static_cast<cudaStream_t>(stream)));
}

PinnedBuffer::PinnedBuffer(size_t bytes) : n_(bytes) {
  CUDA_CHECK(cudaMallocHost(&p_, std::max<size_t>(bytes, 1)));
}

PinnedBuffer::~PinnedBuffer() {
  if (p_) cudaFreeHost(p_);
}

void copy_async(void* dst, const void* src, size_t bytes, void* stream) {
  if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, static_cast<cudaStream_t>(stream)));
}

void synchronize(void* stream) {
  CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
}

double time_ms(void* stream, const std::function<void()>& body) {
  auto s = static_cast<cudaStream_t>(stream);
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

double copy_bandwidth_gbps(size_t bytes, int iters) {
  const Tensor src = empty_device(DType::I8, {static_cast<int64_t>(bytes)});
  const Tensor dst = empty_device(DType::I8, {static_cast<int64_t>(bytes)});
  void* s = compute_stream();
  double best = 1e30;
  for (int i = 0; i < iters + 1; ++i) {
    const double ms = time_ms(s, [&] {
      CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, bytes, cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(s)));
    });
    if (i > 0) best = std::min(best, ms);  // the first copy warms the pages up
  }
  return 2.0 * static_cast<double>(bytes) / (best * 1e-3) / 1e9;
}

std::string device_description() {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp p{};
  CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
  return std::string(p.name) + ", " + std::to_string(p.multiProcessorCount) + " SMs, " +
         std::to_string(p.totalGlobalMem >> 30) + " GiB";
}

}  // namespace kestrel::backends::cuda
