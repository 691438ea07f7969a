// Matmul microbenchmark of SmolLM2-135M's shapes (run with KESTREL_OPS_PERF=1; skipped otherwise):
// weight-bytes GB/s at M=1 (decode) and GFLOP/s at M=512 (prefill) for each CPU variant, next to the
// machine's measured read bandwidth. "cold" cycles through enough copies of the weight (>= 128 MiB)
// that every call streams it from DRAM, as a decode step over the whole model does; "hot" repeats one
// copy that stays in cache.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <random>

#include "core/dequant.h"
#include "core/thread_pool.h"
#include "ops/dispatch.h"

namespace kestrel {
namespace {

using namespace ops;
using clock = std::chrono::steady_clock;

bool perf_enabled() {
  const char* e = std::getenv("KESTREL_OPS_PERF");
  return e && *e && std::string(e) != "0";
}

double seconds_since(clock::time_point t0) {
  return std::chrono::duration<double>(clock::now() - t0).count();
}

// Read bandwidth with every pool thread summing its share of a 512 MiB buffer (best of 5).
double read_bandwidth_gbs(ThreadPool& pool) {
  const int64_t n = (512ll << 20) / 8;
  std::vector<int64_t> buf(n, 1);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    std::vector<int64_t> sums(pool.size());
    const auto t0 = clock::now();
    pool.run([&](int t, int nt) {
      int64_t s = 0;
      for (int64_t i = n * t / nt; i < n * (t + 1) / nt; ++i) s += buf[i];
      sums[t] = s;
    });
    best = std::max(best, n * 8.0 / seconds_since(t0) * 1e-9);
    int64_t total = 0;
    for (int64_t s : sums) total += s;
    EXPECT_EQ(total, n);
  }
  return best;
}

TEST(OpsPerf, SmolLM2Matmul) {
  if (!perf_enabled()) GTEST_SKIP() << "set KESTREL_OPS_PERF=1 to run the matmul microbenchmark";
  // KESTREL_OPS_PERF_THREADS overrides the pool size (e.g. 1 to see one core's kernel speed).
  const char* nt = std::getenv("KESTREL_OPS_PERF_THREADS");
  ThreadPool own(nt ? std::atoi(nt) : 1);
  ThreadPool& pool = nt ? own : ThreadPool::global();
  std::printf("threads %d, read bandwidth %.1f GB/s\n", pool.size(), read_bandwidth_gbs(pool));
  struct Shape {
    DType t;
    int64_t n, k;
  };
  const Shape shapes[] = {{DType::Q4_1, 576, 576},
                          {DType::Q4_1, 192, 576},
                          {DType::Q4_1, 1536, 576},
                          {DType::Q4_1, 576, 1536},
                          {DType::Q8_0, 49152, 576}};
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  Context ctx;
  ctx.pool = &pool;
  for (const Shape& s : shapes) {
    // Weights: random values quantized; enough copies to exceed the last-level cache.
    std::vector<float> f(s.n * s.k);
    for (float& v : f) v = nd(rng);
    Tensor w0 = Tensor::empty_host(s.t, {s.n, s.k});
    for (int64_t r = 0; r < s.n; ++r) quantize_row(s.t, f.data() + r * s.k, w0.row(r), s.k);
    const int copies = static_cast<int>(std::max<size_t>(1, (128ull << 20) / w0.nbytes() + 1));
    std::vector<Tensor> ws;
    for (int c = 0; c < copies; ++c) {
      ws.push_back(Tensor::empty_host(s.t, {s.n, s.k}));
      std::memcpy(ws.back().data, w0.data, w0.nbytes());
    }
    for (int64_t m : {1, 512}) {
      Tensor x = Tensor::empty_host(DType::F32, {m, s.k}), y = Tensor::empty_host(DType::F32, {m, s.n});
      for (int64_t i = 0; i < x.numel(); ++i) x.ptr<float>()[i] = nd(rng);
      for (const auto& v : registries().matmul.variants()) {
        // The scalar fallback takes minutes on the prefill shapes; it is not a performance path.
        if (v.device != Device::Cpu || v.name == "cpu.ref" || (v.name.starts_with("cpu.generic") && m > 1)) continue;
        if (!v.supports({x, w0, y, nullptr}, nullptr)) continue;
        for (bool cold : {false, true}) {
          if (cold && m > 1) continue;  // prefill reuses each weight 512 times: compute-bound either way
          int reps = 0;
          const auto t0 = clock::now();
          double el = 0;
          while (el < 0.3 || reps < 3) {
            const Tensor& w = cold ? ws[reps % copies] : w0;
            v.run({x, w, y, nullptr}, ctx);
            ++reps;
            el = seconds_since(t0);
          }
          const double us = el / reps * 1e6;
          std::printf("%-5s N=%-6lld K=%-5lld M=%-4lld %-15s %-4s %10.1f us %7.1f GB/s(w) %8.1f GFLOP/s\n",
                      std::string(dtype_name(s.t)).c_str(), static_cast<long long>(s.n), static_cast<long long>(s.k),
                      static_cast<long long>(m), v.name.c_str(), cold ? "cold" : "hot", us, w0.nbytes() / us * 1e-3,
                      2.0 * m * s.n * s.k / us * 1e-3);
        }
      }
    }
  }
}

}  // namespace
}  // namespace kestrel
