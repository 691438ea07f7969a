#include "backends/cpu/runtime.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "core/error.h"
#include "core/thread_pool.h"

namespace kestrel::backends::cpu {
namespace {

class DoneEvent final : public ops::Event {
 public:
  DoneEvent() : t_(std::chrono::steady_clock::now()) {}
  bool done() const override { return true; }
  void wait() const override {}
  double ms_since(const ops::Event& earlier) const override {
    const auto* e = dynamic_cast<const DoneEvent*>(&earlier);
    KS_CHECK(e != nullptr, "ms_since: events of different lanes");
    return std::chrono::duration<double, std::milli>(t_ - e->t_).count();
  }

 private:
  std::chrono::steady_clock::time_point t_;
};

class HeapBuffer final : public ops::HostBuffer {
 public:
  explicit HeapBuffer(size_t n)
      : t_(Tensor::empty_host(DType::I8, {static_cast<int64_t>(std::max<size_t>(n, 1))})), n_(n) {}
  void* data() const override { return t_.data; }
  size_t size() const override { return n_; }

 private:
  Tensor t_;
  size_t n_;
};

class CpuRuntime final : public ops::Runtime {
 public:
  CpuRuntime() = default;
  ~CpuRuntime() override { clear_state(); }

  Device device() const override { return Device::Cpu; }
  std::string description() const override { return fmt::format("CPU, {} threads", ThreadPool::global().size()); }
  int sm_count() const override { return ThreadPool::global().size(); }
  void* native_stream() const override { return nullptr; }
  bool asynchronous() const override { return false; }

  Tensor allocate(DType dtype, std::vector<int64_t> shape) override {
    return Tensor::empty_host(dtype, std::move(shape));
  }
  Tensor upload(const Tensor& host) override { return host; }
  void download(const Tensor& src, Tensor& dst) override {
    if (dst.data != src.data) std::memcpy(dst.data, src.data, src.nbytes());
  }
  std::unique_ptr<ops::HostBuffer> host_buffer(size_t bytes) override { return std::make_unique<HeapBuffer>(bytes); }
  void copy_async(void* dst, const void* src, size_t bytes) override {
    if (bytes && dst != src) std::memmove(dst, src, bytes);
  }
  void fill_async(void* dst, int byte, size_t bytes) override { std::memset(dst, byte, bytes); }

  std::unique_ptr<ops::Event> record(bool) override { return std::make_unique<DoneEvent>(); }
  void synchronize() override {}
  bool graphs_supported() const override { return false; }
  std::unique_ptr<ops::Graph> capture(const std::function<void()>&) override {
    KS_FAIL("the CPU lane has no graphs (check graphs_supported())");
  }

  ops::ErrorRows error_rows(int rows) override {
    if (static_cast<int>(errors_.size()) < rows) {
      errors_.resize(rows, 0);
      bump_generation();
    }
    return {errors_.data(), static_cast<int>(errors_.size())};
  }
  std::vector<unsigned> take_row_errors(int rows) override {
    std::vector<unsigned> out(rows, 0);
    for (int i = 0; i < rows && i < static_cast<int>(errors_.size()); ++i) std::swap(out[i], errors_[i]);
    return out;
  }

  double copy_bandwidth_gbps(size_t bytes, int iters) override {
    const Tensor a = Tensor::empty_host(DType::I8, {static_cast<int64_t>(bytes)});
    const Tensor b = Tensor::empty_host(DType::I8, {static_cast<int64_t>(bytes)});
    double best = 1e30;
    for (int i = 0; i < iters + 1; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      std::memcpy(b.data, a.data, bytes);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (i > 0) best = std::min(best, s);
    }
    return 2.0 * static_cast<double>(bytes) / best / 1e9;
  }

 private:
  std::vector<unsigned> errors_;
};

}  // namespace

std::shared_ptr<ops::Runtime> make_runtime() {
  return std::make_shared<CpuRuntime>();
}

}  // namespace kestrel::backends::cpu
