// GPU kernel benchmarks against the card's measured ceilings, in one run: device-to-device copy
// bandwidth (bytes read + written) and the cuBLASLt bf16 GEMM rate. Every case is captured in a CUDA
// graph (which also proves it is capturable) that rotates over enough input copies to defeat the 50 MB
// L2, and is timed with events; the median of several replays is reported.
//   kestrel_cuda_bench [--json FILE] [--quick] [--copy-ceiling GB/s from the peer script's copy]
//                      [--filter TEXT: only the groups (attention, matmul, elementwise), the attention cases
//                      whose name contains TEXT, or the matmuls of one weight type (bf16, q4_k, q6_k, q8_0,
//                      w4a16-g128: GPTQ/AWQ-style U4 codes, asymmetric groups of 128, with its speed-up over bf16)]
//                      [--m 356,384,512: the matmuls' activation rows instead of the decode/prefill list]
#include <cuda_runtime.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "../../tests/common/random_weights.h"
#include "backends/backends.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device_tensor.h"
#include "backends/cuda/gemm_cublaslt.h"
#include "backends/cuda/runtime.h"
#include "core/error.h"
#include "engine/kv_format.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

using namespace kestrel;
using namespace kestrel::backends::cuda;
using nlohmann::json;

namespace {

constexpr size_t kRotateBytes = size_t{256} << 20;  // inputs per graph: well above L2

cudaStream_t g_stream;
ops::Context g_ctx;  // the default CUDA lane; g_stream is its stream

const ops::Context& ctx() {
  return g_ctx;
}

Tensor random_device(DType t, std::vector<int64_t> shape, std::mt19937& rng, float scale = 1.f) {
  Tensor h = Tensor::empty_host(DType::F32, std::move(shape));
  std::normal_distribution<float> n(0.f, scale);
  for (int64_t i = 0; i < h.numel(); ++i) h.ptr<float>()[i] = n(rng);
  return to_device(h, t, g_stream);
}

int copies_for(double bytes) {
  return static_cast<int>(std::clamp(std::ceil(kRotateBytes / bytes), 1.0, 16.0));
}

// Captures `launch(i)` for i in [0, n) into a graph and returns the median microseconds per launch.
double time_graph(int n, const std::function<void(int)>& launch) {
  for (int i = 0; i < n; ++i) launch(i);  // warm-up: plans, workspaces, module load
  CUDA_CHECK(cudaStreamSynchronize(g_stream));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  const int reps = std::max(1, 40 / n);
  CUDA_CHECK(cudaStreamBeginCapture(g_stream, cudaStreamCaptureModeThreadLocal));
  for (int r = 0; r < reps; ++r)
    for (int i = 0; i < n; ++i) launch(i);
  CUDA_CHECK(cudaStreamEndCapture(g_stream, &graph));
  CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  cudaEvent_t e0, e1;
  CUDA_CHECK(cudaEventCreate(&e0));
  CUDA_CHECK(cudaEventCreate(&e1));
  CUDA_CHECK(cudaGraphLaunch(exec, g_stream));
  std::vector<double> times;
  for (int t = 0; t < 7; ++t) {
    CUDA_CHECK(cudaEventRecord(e0, g_stream));
    CUDA_CHECK(cudaGraphLaunch(exec, g_stream));
    CUDA_CHECK(cudaEventRecord(e1, g_stream));
    CUDA_CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    times.push_back(ms * 1e3 / (reps * n));
  }
  CUDA_CHECK(cudaGraphExecDestroy(exec));
  CUDA_CHECK(cudaGraphDestroy(graph));
  CUDA_CHECK(cudaEventDestroy(e0));
  CUDA_CHECK(cudaEventDestroy(e1));
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

struct Ceilings {
  double copy_gbs = 0, gemm_tflops = 0;
};

json g_results = json::array();
double g_peer_copy_gbs = 0;  // --copy-ceiling: the torch peer's copy rate from the same call
std::string g_filter;        // --filter
std::vector<int64_t> g_ms;   // --m: activation rows of the matmul cases (empty: the default list)
bool wanted(const std::string& name) {
  return g_filter.empty() || name.find(g_filter) != std::string::npos;
}
// The grouped integer weights benchmarked, GPTQ/AWQ's common W4A16 format: U4 codes with an f16 scale and
// zero point per 128 input channels (core/linear.h). Listed as U4 among the weight types.
constexpr int64_t kGroup = 128;
std::string weight_name(DType t) {
  return t == DType::U4 ? "w4a16-g128" : std::string(dtype_name(t));
}

// A --filter naming a weight type (q4_k, bf16, w4a16-g128, ...): only that type's matmuls, and bf16's, the
// baseline of the speed-up lines.
bool type_filter() {
  for (DType t : {DType::BF16, DType::Q4_K, DType::Q6_K, DType::Q8_0, DType::U4})
    if (g_filter == weight_name(t)) return true;
  return false;
}
Ceilings g_ceil;

void record(const std::string& group, const std::string& name, const std::string& variant, double us, double bytes,
            double flops) {
  const double gbs = bytes / us * 1e-3, tflops = flops / us * 1e-6;
  const double pct = flops > 0 && tflops / g_ceil.gemm_tflops > gbs / g_ceil.copy_gbs
                         ? 100 * tflops / g_ceil.gemm_tflops
                         : 100 * gbs / g_ceil.copy_gbs;
  std::printf("%-10s %-34s %-22s %10.2f us %8.1f GB/s %7.1f TFLOP/s %6.1f%% of ceiling\n", group.c_str(), name.c_str(),
              variant.c_str(), us, gbs, tflops, pct);
  std::fflush(stdout);
  g_results.push_back({{"group", group},
                       {"case", name},
                       {"variant", variant},
                       {"us", us},
                       {"gb_per_s", gbs},
                       {"tflop_per_s", tflops},
                       {"pct_of_ceiling", pct}});
}

Ceilings measure_ceilings(std::mt19937& rng) {
  Ceilings c;
  const size_t bytes = size_t{1} << 30;
  Tensor a = empty_device(DType::I8, {static_cast<int64_t>(bytes)}), b = empty_device(DType::I8, {int64_t(bytes)});
  CUDA_CHECK(cudaMemsetAsync(a.data, 1, bytes, g_stream));
  const double copy_us = time_graph(
      1, [&](int) { CUDA_CHECK(cudaMemcpyAsync(b.data, a.data, bytes, cudaMemcpyDeviceToDevice, g_stream)); });
  c.copy_gbs = std::max(2.0 * bytes / copy_us * 1e-3, g_peer_copy_gbs);
  const int64_t n = 8192;
  Tensor x = random_device(DType::BF16, {n, n}, rng), w = random_device(DType::BF16, {n, n}, rng);
  Tensor y = empty_device(DType::BF16, {n, n});
  const double gemm_us =
      time_graph(1, [&](int) { cublaslt_matmul(lane_of(g_ctx), x.data, w.data, DType::BF16, y.data, n, n, n); });
  c.gemm_tflops = 2.0 * n * n * n / gemm_us * 1e-6;
  std::printf(
      "ceilings: copy %.0f GB/s (max of cudaMemcpy D2D %.0f and the peer's copy kernel %.0f; bytes read+written), "
      "bf16 GEMM 8192^3 %.0f TFLOP/s (cuBLASLt)\n",
      c.copy_gbs, 2.0 * bytes / copy_us * 1e-3, g_peer_copy_gbs, c.gemm_tflops);
  return c;
}

// A weight matrix on the host: a GGUF type from random blocks with sane scales, U4 as w4a16-g128 (random
// codes, scales and zero points); bf16 is drawn on the device (random_device).
Linear random_host_weight(DType t, int64_t n, int64_t k, std::mt19937& rng) {
  if (t == DType::U4) return testing::random_grouped(t, n, k, kGroup, /*asym=*/true, /*act_order=*/false, rng, 0.02f);
  return testing::random_weights(t, {n, k}, rng, 0.02f);
}

// `copies` device copies of one random weight (distinct memory, so the rotation defeats L2 all the same).
std::vector<Linear> random_weights(DType t, int64_t n, int64_t k, int copies, std::mt19937& rng) {
  std::vector<Linear> ws;
  if (t == DType::BF16) {
    for (int i = 0; i < copies; ++i) ws.emplace_back(random_device(DType::BF16, {n, k}, rng, 0.02f));
    return ws;
  }
  const Linear host = random_host_weight(t, n, k, rng);
  for (int i = 0; i < copies; ++i) {
    Linear d = host;
    for (Tensor* p : {&d.weight, &d.groups.scales, &d.groups.zeros, &d.groups.g_idx})
      if (!p->empty()) *p = to_device(*p, p->dtype, g_stream);
    ws.push_back(std::move(d));
  }
  return ws;
}

// Bytes a weight streams: its codes or blocks, and for grouped weights their scales and zero points.
double weight_bytes(DType t, int64_t n, int64_t k) {
  if (t != DType::U4) return static_cast<double>(row_bytes(t, k)) * n;
  const double groups = static_cast<double>((k + kGroup - 1) / kGroup);
  return static_cast<double>(row_bytes(t, k)) * n + 2.0 * 2.0 * n * groups;
}

void bench_matmul(std::mt19937& rng, bool quick) {
  struct Shape {
    const char* name;
    int64_t n, k;
  };
  const std::vector<Shape> shapes = {{"qkv", 6144, 4096},
                                     {"o", 4096, 4096},
                                     {"gate_up", 28672, 4096},
                                     {"down", 4096, 14336},
                                     {"lm_head", 128256, 4096}};
  const std::vector<DType> types =
      quick ? std::vector<DType>{DType::BF16, DType::Q4_K, DType::U4}
            : std::vector<DType>{DType::BF16, DType::Q4_K, DType::Q6_K, DType::Q8_0, DType::U4};
  std::map<std::string, double> bf16_us;  // the dispatcher's bf16 time per shape and M, for the speed-ups
  for (DType wt : types) {
    if (type_filter() && g_filter != weight_name(wt) && wt != DType::BF16) continue;
    double step_us = 0, step_bytes = 0;  // llama3-8b GEMMs of one batch-1 decode step, dispatcher's choices
    for (const Shape& s : shapes) {
      const double wbytes = weight_bytes(wt, s.n, s.k);
      const int copies = copies_for(wbytes);
      const std::vector<Linear> ws = random_weights(wt, s.n, s.k, copies, rng);
      const std::vector<int64_t> ms = !g_ms.empty() ? g_ms
                                      : quick       ? std::vector<int64_t>{1, 8}
                                                    : std::vector<int64_t>{1, 2, 4, 8, 16, 32, 64, 128, 256, 2048};
      for (int64_t m : ms) {
        Tensor x = random_device(DType::BF16, {m, s.k}, rng);
        Tensor y = empty_device(DType::BF16, {m, s.n});
        const double bytes = wbytes + 2.0 * m * (s.k + s.n), flops = 2.0 * m * s.n * s.k;
        const std::string name = fmt::format("llama3-8b {} {} {}x{} M={}", weight_name(wt), s.name, s.n, s.k, m);
        const std::string shape_key = fmt::format("{} M={}", s.name, m);
        const ops::MatmulArgs probe{x, ws[0], y, nullptr};
        const std::string chosen = ops::registries().matmul.select(probe, ctx()).name;
        for (const auto& v : ops::registries().matmul.variants()) {
          if (v.device != Device::Cuda || !v.supports(probe, nullptr)) continue;
          const double us = time_graph(copies, [&](int i) { v.run({x, ws[i], y, nullptr}, ctx()); });
          record("matmul", name, v.name + (v.name == chosen ? " (dispatch)" : ""), us, bytes, flops);
          // With --m: the heuristic's other cuBLASLt algorithms too, to see what its first choice leaves.
          if (v.name == "cuda.cublaslt" && !g_ms.empty())
            for (int c = 1; c < cublaslt_candidates(lane_of(g_ctx), m, s.n, s.k, DType::BF16); ++c)
              record("matmul", name, fmt::format("cuda.cublaslt#{}", c),
                     time_graph(copies,
                                [&](int i) {
                                  cublaslt_matmul(lane_of(g_ctx), x.data, ws[i].weight.data, DType::BF16, y.data, m,
                                                  s.n, s.k, c);
                                }),
                     bytes, flops);
          const double layers = std::string(s.name) == "lm_head" ? 1 : 32;
          if (m == 1 && v.name == chosen) step_us += us * layers, step_bytes += wbytes * layers;
          if (v.name == chosen && wt == DType::BF16) bf16_us[shape_key] = us;
          // Issue 12's goals for W4A16: >= 3.5x bf16 at M=1, >= 3x at M=16, never slower at M=128/256.
          if (v.name == chosen && wt == DType::U4 && bf16_us.count(shape_key))
            std::printf("%-10s %-34s %-22s %10.2fx bf16's dispatch (%.2f us)\n", "speedup", name.c_str(),
                        v.name.c_str(), bf16_us[shape_key] / us, bf16_us[shape_key]);
        }
      }
    }
    record("decode", fmt::format("llama3-8b all GEMMs {}, M=1 (sum)", weight_name(wt)), "dispatch", step_us, step_bytes,
           0);
  }
}

struct AttnCase {
  std::string name;
  int batch, q_len, kv_len;
  bool formats = false;  // also over the quantized --kv-type formats (issue 14's decode shapes)
};

// The cache a format stores for the bf16 pages `src`: the pages themselves, or codes written from them by
// the format's cache write (so scales and codes are what a run would hold).
ops::KvLayer coded_cache(const KvFormat& f, const ops::KvLayer& src) {
  if (f.k == DType::BF16) return src;
  const int64_t blocks = src.k.dim(0), bs = src.k.dim(1), hkv = src.k.dim(2), d = src.k.dim(3), n = blocks * bs;
  ops::KvLayer c{ops::allocate(ctx(), f.k, src.k.shape), ops::allocate(ctx(), f.v, src.k.shape)};
  c.k_params = ops::allocate(ctx(), DType::F16, {blocks, bs, hkv, d / f.group, f.k_params()});
  c.v_params = ops::allocate(ctx(), DType::F16, {blocks, bs, hkv, d / f.group, f.v_params()});
  Tensor slots = Tensor::empty_host(DType::I32, {n});
  std::iota(slots.ptr<int32_t>(), slots.ptr<int32_t>() + n, 0);
  ops::kv_write(ctx(), src.k.reshaped({n, hkv, d}), src.v.reshaped({n, hkv, d}), to_device(slots, DType::I32, g_stream),
                c);
  return c;
}

void bench_attention(std::mt19937& rng, const AttnCase& c) {
  const int64_t H = 32, Hkv = 8, D = 128, bs = 16;
  const int64_t blocks_per_seq = (c.kv_len + bs - 1) / bs;
  const double bf16_bytes = 2.0 * c.batch * c.kv_len * Hkv * D * 2;
  const int copies = c.q_len == 1 ? copies_for(bf16_bytes) : 1;
  std::vector<ops::KvLayer> caches;
  for (int i = 0; i < copies; ++i)
    caches.push_back({random_device(DType::BF16, {c.batch * blocks_per_seq, bs, Hkv, D}, rng),
                      random_device(DType::BF16, {c.batch * blocks_per_seq, bs, Hkv, D}, rng)});
  Tensor tables = Tensor::empty_host(DType::I32, {c.batch, blocks_per_seq});
  std::vector<int32_t> perm(c.batch * blocks_per_seq);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);  // pages scattered like a long-running server's
  std::copy(perm.begin(), perm.end(), tables.ptr<int32_t>());
  Tensor info = Tensor::empty_host(DType::I32, {c.batch, 3});
  ops::AttentionBatch batch;
  batch.scale = 1.f / std::sqrt(static_cast<float>(D));
  for (int b = 0; b < c.batch; ++b) {
    batch.seqs.push_back({b * c.q_len, c.q_len, c.kv_len, nullptr});
    info.ptr<int32_t>()[3 * b] = b * c.q_len;
    info.ptr<int32_t>()[3 * b + 1] = c.q_len;
    info.ptr<int32_t>()[3 * b + 2] = c.kv_len;
  }
  batch.block_tables = to_device(tables, DType::I32, g_stream);
  batch.seq_info = to_device(info, DType::I32, g_stream);
  Tensor q = random_device(DType::BF16, {int64_t{c.batch} * c.q_len, H, D}, rng);
  Tensor out = empty_device(DType::BF16, q.shape);
  const std::string variant = c.q_len == 1 ? "cuda.decode_splitkv" : "cuda.flash_prefill";
  // Causal FLOPs as FlashAttention counts them: 4 * q_len * kv_len * D * H, halved on the diagonal part.
  const double flops = c.q_len == 1
                           ? 4.0 * c.batch * c.kv_len * D * H
                           : 4.0 * c.batch * (double(c.q_len) * c.kv_len - double(c.q_len) * c.q_len / 2) * D * H;
  std::vector<std::string> formats = {"bf16"};
  if (c.formats) formats.insert(formats.end(), {"fp8", "int8", "int4", "int2"});
  for (const std::string& name : formats) {
    const KvFormat f = *kv_format_from_name(name);
    std::vector<ops::KvLayer> coded;
    for (const ops::KvLayer& src : caches) coded.push_back(coded_cache(f, src));
    const double us = time_graph(copies, [&](int i) {
      ops::registries().attention.run_variant(variant, {q, coded[i], batch, out}, ctx());
    });
    // Bytes are the format's own (codes and scales): the GB/s and % of copy say how near the stream runs.
    const double kv_bytes = double(c.batch) * c.kv_len * f.bytes_per_token_layer(Hkv, D);
    record("attention", c.formats ? c.name + " " + name : c.name, variant, us, kv_bytes + 2.0 * q.nbytes(),
           c.q_len == 1 ? 0 : flops);
  }
}

void bench_elementwise(std::mt19937& rng) {
  const int64_t T = 128, d = 4096, f = 14336;
  Tensor x = random_device(DType::BF16, {T, d}, rng), w = random_device(DType::F32, {d}, rng);
  Tensor y = empty_device(DType::BF16, {T, d});
  double us = time_graph(1, [&](int) { ops::rmsnorm(ctx(), x, w, 1e-5f, y); });
  record("norm", "rmsnorm bf16 128x4096", "cuda.rmsnorm", us, 2.0 * 2 * T * d, 0);
  Tensor g = random_device(DType::BF16, {T, f}, rng), u = random_device(DType::BF16, {T, f}, rng);
  Tensor o = empty_device(DType::BF16, {T, f});
  us = time_graph(1, [&](int) { ops::silu_mul(ctx(), g, u, o); });
  record("act", "silu_mul bf16 128x14336", "cuda.vec", us, 3.0 * 2 * T * f, 0);
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    if (!std::strcmp(argv[i], "--filter") && i + 1 < argc) g_filter = argv[++i];
    if (!std::strcmp(argv[i], "--copy-ceiling") && i + 1 < argc) g_peer_copy_gbs = std::atof(argv[++i]);
    if (!std::strcmp(argv[i], "--m") && i + 1 < argc)
      for (const char* p = argv[++i]; *p;) {
        char* end = nullptr;
        const long m = std::strtol(p, &end, 10);
        if (end == p || m < 1) {
          std::fprintf(stderr, "kestrel_cuda_bench: --m takes positive row counts separated by commas\n");
          return 2;
        }
        g_ms.push_back(m);
        p = *end == ',' ? end + 1 : end;
      }
  }
  try {
    if (!cuda_available()) {
      std::printf("no CUDA device: nothing to benchmark\n");
      return 0;
    }
    g_ctx = backends::make_context(Device::Cuda);
    g_stream = lane_of(g_ctx).stream();
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
    std::mt19937 rng(42);
    g_ceil = measure_ceilings(rng);
    if (wanted("elementwise")) bench_elementwise(rng);
    for (const AttnCase& c : std::vector<AttnCase>{{"prefill 1x8K causal h32/8 d128", 1, 8192, 8192, true},
                                                   {"prefill 1x32K causal h32/8 d128", 1, 32768, 32768},
                                                   {"decode 1x8K h32/8 d128", 1, 1, 8192},
                                                   {"decode 1x32K h32/8 d128", 1, 1, 32768, true},
                                                   {"decode 1x128K h32/8 d128", 1, 1, 131072, true},
                                                   {"decode 32x8K h32/8 d128", 32, 1, 8192, true},
                                                   {"decode 16x8K h32/8 d128", 16, 1, 8192},
                                                   {"decode 64x4K h32/8 d128", 64, 1, 4096}})
      if ((!quick || c.kv_len <= 8192) && (wanted("attention") || wanted(c.name))) bench_attention(rng, c);
    if (wanted("matmul") || type_filter()) bench_matmul(rng, quick);
    if (!json_path.empty()) {
      json doc = {{"device", prop.name},
                  {"copy_gb_per_s", g_ceil.copy_gbs},
                  {"gemm_tflop_per_s", g_ceil.gemm_tflops},
                  {"results", g_results}};
      std::FILE* f = std::fopen(json_path.c_str(), "w");
      if (!f) throw Error("cannot write " + json_path);
      std::fputs(doc.dump(1).c_str(), f);
      std::fclose(f);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kestrel_cuda_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
