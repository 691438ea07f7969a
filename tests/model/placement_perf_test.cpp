// Placement benchmark (run with KESTREL_PLACE_PERF=<model path>; skipped otherwise): converts a model's
// weights to bf16 and places them through the CPU lane, the host half of a move to a GPU, with the
// row-by-row reference (the code before streaming) and with DecoderWeights::to_device, each on a fresh
// load (a fresh mapping of a file in the page cache, as a real start has), and prints GB/s of placed
// bytes. Also times the CPU path's fusing of q/k/v and gate/up.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "backends/backends.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "model/model.h"
#include "placement_reference.h"

namespace kestrel {
namespace {

using clock = std::chrono::steady_clock;

double seconds_since(clock::time_point t0) {
  return std::chrono::duration<double>(clock::now() - t0).count();
}

// A device that takes copies and keeps nothing: what placing on a GPU costs the host (reading the mapped
// file, converting, filling staging buffers) without the CPU lane's own costs, which a GPU does not have
// (fresh host memory for every tensor, copying each staging buffer again on the calling thread). Its
// tensors point at no memory and must not be read.
class NullLane final : public ops::Runtime {
 public:
  Device device() const override { return Device::Cuda; }
  std::string description() const override { return "null device"; }
  int sm_count() const override { return 1; }
  void* native_stream() const override { return nullptr; }
  bool asynchronous() const override { return true; }
  Tensor allocate(DType dtype, std::vector<int64_t> shape) override {
    Tensor t;
    t.dtype = dtype;
    t.shape = std::move(shape);
    t.device = Device::Cuda;
    t.data = reinterpret_cast<void*>(uintptr_t{4096});
    return t;
  }
  Tensor upload(const Tensor& host) override { return allocate(host.dtype, host.shape); }
  void download(const Tensor&, Tensor&) override { KS_FAIL("the null lane keeps nothing"); }
  std::unique_ptr<ops::HostBuffer> host_buffer(size_t bytes) override {
    return backends::default_runtime(Device::Cpu)->host_buffer(bytes);
  }
  void copy_async(void*, const void*, size_t) override {}
  void fill_async(void*, int, size_t) override {}
  std::unique_ptr<ops::Event> record(bool timing) override {
    return backends::default_runtime(Device::Cpu)->record(timing);
  }
  void synchronize() override {}
  bool graphs_supported() const override { return false; }
  std::unique_ptr<ops::Graph> capture(const std::function<void()>&) override { KS_FAIL("no graphs"); }
  ops::ErrorRows error_rows(int) override { return {}; }
  std::vector<unsigned> take_row_errors(int rows) override { return std::vector<unsigned>(rows); }
  double copy_bandwidth_gbps(size_t, int) override { return 0; }
};

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.shape == b.shape && a.dtype == b.dtype && (a.empty() || !std::memcmp(a.data, b.data, a.nbytes()));
}

// GB/s of placed (bf16) bytes: `place` runs on a fresh load of the model.
template <typename F>
double placed_gbs(const char* path, const char* what, F&& place) {
  auto model = load_model(path);
  const auto t0 = clock::now();
  const DecoderWeights placed = place(model->decoder->weights());
  const double s = seconds_since(t0), gb = static_cast<double>(placed.nbytes()) / 1e9;
  std::printf("%-44s %6.2f GB in %6.2f s = %6.2f GB/s\n", what, gb, s, gb / s);
  return gb / s;
}

TEST(PlacementPerf, Bf16FromAMappedFile) {
  const char* path = std::getenv("KESTREL_PLACE_PERF");
  if (!path || !*path) GTEST_SKIP() << "set KESTREL_PLACE_PERF=<model path> to run";
  std::printf("%s, %d threads\n", path, ThreadPool::global().size());
  ops::Context cpu = backends::make_context(Device::Cpu), null = cpu;
  null.device = Device::Cuda;
  null.runtime = std::make_shared<NullLane>();
  for (const auto& [name, ctx] : {std::pair{"host side of a GPU placement", &null}, std::pair{"CPU lane", &cpu}}) {
    placed_gbs(path, fmt::format("{}, reference (row by row):", name).c_str(),
               [&](const DecoderWeights& w) { return testing::reference_to_device(w, *ctx, DType::BF16); });
    placed_gbs(path, fmt::format("{}, to_device (streamed):", name).c_str(),
               [&](const DecoderWeights& w) { return w.to_device(*ctx, DType::BF16, true); });
  }

  // Same bytes from both, on the CPU lane.
  auto model = load_model(path);
  const DecoderWeights& w = model->decoder->weights();
  const DecoderWeights want = testing::reference_to_device(w, cpu, DType::BF16),
                       got = w.to_device(cpu, DType::BF16, true);
  bool same = same_bytes(got.tok_embd, want.tok_embd) && same_bytes(got.output.weight, want.output.weight);
  for (size_t l = 0; l < want.layers.size(); ++l) {
    for (size_t i = 0; i < want.layers[l].vectors().size(); ++i)
      same = same && same_bytes(*got.layers[l].vectors()[i], *want.layers[l].vectors()[i]);
    for (size_t i = 0; i < want.layers[l].linears().size(); ++i)
      same = same && same_bytes(got.layers[l].linears()[i]->weight, want.layers[l].linears()[i]->weight);
  }
  EXPECT_TRUE(same);

  // The CPU path keeps file types and only stacks q/k/v and gate/up: by copying every part before, now
  // on every core, and not at all where the parts are adjacent in the file.
  model = load_model(path);
  std::vector<Tensor> stacked;  // kept, as place_on keeps them
  auto t0 = clock::now();
  for (const LayerWeights& L : model->decoder->weights().layers) {
    stacked.push_back(testing::reference_stack({&L.wq.weight, &L.wk.weight, &L.wv.weight}));
    stacked.push_back(testing::reference_stack({&L.w_gate.weight, &L.w_up.weight}));
  }
  std::printf("CPU place_on (fusing), reference (copies):  %6.2f s\n", seconds_since(t0));
  model = load_model(path);
  DecoderWeights fused = model->decoder->weights();
  t0 = clock::now();
  fused.fuse_projections();
  std::printf("CPU place_on (fusing), fuse_projections:    %6.2f s\n", seconds_since(t0));
}

}  // namespace
}  // namespace kestrel
