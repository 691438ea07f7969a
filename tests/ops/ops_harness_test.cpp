// The ops harness (like llama.cpp's test-backend-ops): for every op, every registered variant on every
// device with an adapter (ops_harness.h) runs a range of shapes against "cpu.ref" with fresh seeded
// random inputs and NaN-poisoned outputs, and must stay within a normalised-MSE bound:
//   nmse = sum (y - y_ref)^2 / sum y_ref^2.
// A variant that declines a case (supports() says no) fails it, unless the case names that decline as
// expected: a declined case is an untested one. Each test then requires every variant whose hardware the
// machine has to have run at least one of its cases, and at least one run on the CPU.
// Perf mode (KESTREL_OPS_PERF=1) also times each variant and prints us, GB/s and GFLOP/s per case.
#include "ops_harness.h"

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <numeric>
#include <optional>
#include <random>

#include "../common/random_weights.h"
#include "backends/backends.h"
#include "backends/cpu/kernels.h"
#include "core/convert.h"
#include "core/dequant.h"
#include "core/error.h"
#include "core/half.h"
#include "core/quant_blocks.h"
#include "core/quant_groups.h"
#include "core/thread_pool.h"
#include "core/w8a8.h"
#include "ops/classifier_dispatch.h"
#include "ops/dispatch.h"
#include "ops/moe_dispatch.h"
#include "ops/ops.h"

namespace kestrel::ops_harness {

std::vector<DeviceAdapter>& device_adapters() {
  static std::vector<DeviceAdapter> adapters;
  return adapters;
}

namespace {

using namespace ops;

// ---- bounds ------------------------------------------------------------------------------------------
// Float paths differ from the double-accumulating reference only by f32 rounding: with sums of up to a
// few thousand terms the relative error is ~1e-6, so the NMSE is ~1e-12; 1e-8 leaves room for
// cancellation in small outputs without hiding a wrong index (which gives NMSE ~1).
constexpr double kFloatBound = 1e-8;
// Quantized weights: the fast kernels also round the activations to 8 bits per 32-block (step
// absmax/127), a relative noise of ~2e-5 on average. With only a handful of outputs the ratio has a
// heavy tail (a near-zero output over a noisy one; seen up to ~7e-4 with one output), so these
// statistical cases use 64+ outputs and 1e-3, while the exact cases below (activations on the 8-bit
// grid) hold the kernels to kFloatBound. A wrong nibble order, scale or offset gives NMSE >~ 1e-2.
constexpr double kQuantBound = 1e-3;
// The ".a16" CPU variants round activations to 16 bits per 32-block instead (step absmax/32767): the
// error variance is 258^2 ~ 6.7e4 times smaller than int8's. Measured: <= 7e-10 on the gaussian cases
// and up to 7e-8 on single-output 8-bit-grid cases (not exact for them: 32767 / 127 is no integer).
// 1e-6 is 1000x tighter than the int8 bound with >10x headroom over that tail, so an a16 kernel that
// lost precision to 8-bit level (NMSE ~1e-5..1e-3) fails; on a 16-bit grid they are exact and held
// to kFloatBound.
constexpr double kQuant16Bound = 1e-6;
// Code pages written from a rotation that a variant rounds differently (sin/cos, fused order): a value on a
// rounding boundary moves by one code step, at most a 4-bit step (a fifteenth of a group's range, NMSE
// ~0.11 per element of unit variance). The cases hold >= 8K cached elements, so a few such moves stay below
// 1e-4, while a wrong layout, scale or nibble order gives NMSE ~1.
constexpr double kCodeStepBound = 1e-4;
// A case's bound for a variant it cannot judge (matmul_bound): the run happens, the comparison does not.
constexpr double kNotJudged = -1;

bool perf_mode() {
  const char* e = std::getenv("KESTREL_OPS_PERF");
  return e && *e && std::string(e) != "0";
}

// ---- tensors -----------------------------------------------------------------------------------------

Tensor rand_f32(std::vector<int64_t> shape, std::mt19937& rng, float scale = 1.f) {
  Tensor t = Tensor::empty_host(DType::F32, std::move(shape));
  std::normal_distribution<float> n(0.f, scale);
  for (int64_t i = 0; i < t.numel(); ++i) t.ptr<float>()[i] = n(rng);
  return t;
}

Tensor clone(const Tensor& t) {
  Tensor c = Tensor::empty_host(t.dtype, t.shape);
  std::memcpy(c.data, t.data, t.nbytes());
  return c;
}

Tensor to_f32(const Tensor& t) {
  if (t.dtype == DType::F32) return clone(t);
  Tensor c = Tensor::empty_host(DType::F32, t.shape);
  for (int64_t r = 0; r < t.rows(); ++r) dequantize_row(t.dtype, t.row(r), c.ptr<float>() + r * t.cols(), t.cols());
  return c;
}

// All bits set: NaN in f32, f16 and bf16.
Tensor poisoned(DType t, std::vector<int64_t> shape) {
  Tensor p = Tensor::empty_host(t, std::move(shape));
  std::memset(p.data, 0xFF, p.nbytes());
  return p;
}

double nmse(const Tensor& got, const Tensor& ref) {
  if (got.numel() != ref.numel()) return INFINITY;
  double err = 0, norm = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    const double g = got.ptr<float>()[i], r = ref.ptr<float>()[i];
    if (!std::isfinite(g)) return INFINITY;
    err += (g - r) * (g - r);
    norm += r * r;
  }
  return norm > 0 ? err / norm : err;
}

// ---- devices -----------------------------------------------------------------------------------------

ThreadPool& harness_pool() {
  // Two threads on every machine, so the threaded split paths run (and deterministically so) in CI.
  static ThreadPool pool(2);
  return pool;
}

const DeviceAdapter& cpu_adapter() {
  static const DeviceAdapter a{Device::Cpu,
                               "cpu",
                               [] { return true; },
                               [](Role, DType host) { return host; },
                               clone,
                               to_f32,
                               [] {},
                               [] { return std::shared_ptr<Runtime>(); },
                               0};
  return a;
}

// The KV code types (pages with a parameter pool), which CUDA reads and writes besides bf16.
bool is_kv_code_type(DType t) {
  return t == DType::F8E4M3 || t == DType::U8 || t == DType::U4 || t == DType::U2;
}

// The dtypes the CUDA kernels take (their supports() checks in backends/cuda/register.cpp): bf16
// activations, bf16 or quantized KV pages, bf16 or GGUF-typed weights (as Decoder::place_on leaves them),
// f32 norm weights and biases.
DType cuda_dtype(Role role, DType host) {
  switch (role) {
    case Role::Weight: return quant::is_weight_type(host) ? host : DType::BF16;
    case Role::Cache: return is_kv_code_type(host) ? host : DType::BF16;
    case Role::KvParams: return host;
    case Role::Table:
    case Role::Activation: return DType::BF16;
    case Role::Param: return DType::F32;
    case Role::Index: return host;
  }
  return host;
}

// Without an explicitly registered adapter, a device the build and the machine have is reached through
// its default lane (ops::upload/download).
const DeviceAdapter* lane_adapter(Device d) {
  static std::vector<DeviceAdapter> made;
  for (const DeviceAdapter& a : made)
    if (a.device == d) return &a;
  if (!backends::available(d)) return nullptr;
  const Context ctx = backends::make_context(d);
  DeviceAdapter a{d, d == Device::Cuda ? "cuda" : "device", [] { return true; }, cuda_dtype,
                  [ctx](const Tensor& h) { return ops::upload(ctx, h); },
                  [ctx](const Tensor& t) {
                    Tensor host = Tensor::empty_host(t.dtype, t.shape);
                    ops::download(ctx, t, host);
                    return to_f32(host);
                  },
                  [ctx] { ctx.lane().synchronize(); }, [ctx] { return ctx.runtime; },
                  // Judged against the reference on the inputs it receives (host_view): bf16 outputs, ~2^-9
                  // relative rounding each (NMSE ~1e-6), and the kernels' own bf16 steps (attention's P).
                  1e-4};
  made.push_back(std::move(a));
  return &made.back();
}

const DeviceAdapter* adapter_for(Device d) {
  if (d == Device::Cpu) return &cpu_adapter();
  for (const DeviceAdapter& a : device_adapters())
    if (a.device == d) return a.available() ? &a : nullptr;
  const DeviceAdapter* a = lane_adapter(d);
  return a && a->available() ? a : nullptr;
}

// `host` on the adapter's device in the dtype that device takes for `role`.
Tensor convert(const Tensor& t, DType to) {
  Tensor c = Tensor::empty_host(to, t.shape);
  convert_rows(t.dtype, t.data, to, c.data, t.rows(), t.cols());
  return c;
}

Tensor put(const DeviceAdapter& a, const Tensor& host, Role role) {
  const DType to = a.dtype_for(role, host.dtype);
  const DType via = a.rounds_to ? a.rounds_to(role, host.dtype) : host.dtype;
  const Tensor rounded = via == host.dtype ? host : convert(convert(host, via), host.dtype);
  return a.upload(to == rounded.dtype ? rounded : convert(rounded, to));
}

// The CPU reference's view of a device: inputs rounded to the dtypes that device receives them in, but
// travelling in what the reference reads (f32 activations and parameters; weights and KV pages in the
// device's type, which the reference dequantizes). Comparing a device variant with the reference run on
// these inputs measures the kernel alone, so even a single output with heavy cancellation is judged
// fairly (against the unrounded inputs, bf16 weights moved one such output by NMSE 1.7e-2).
const DeviceAdapter& host_view(const DeviceAdapter& dev) {
  static std::map<const DeviceAdapter*, DeviceAdapter> views;
  auto it = views.find(&dev);
  if (it != views.end()) return it->second;
  DeviceAdapter v = cpu_adapter();
  v.name = "cpu view of " + dev.name;
  v.dtype_for = [&dev](Role role, DType host) {
    return role == Role::Weight || role == Role::Table || role == Role::Cache || role == Role::KvParams
               ? dev.dtype_for(role, host)
               : host;
  };
  v.rounds_to = [&dev](Role role, DType host) {
    return role == Role::Activation || role == Role::Param ? dev.dtype_for(role, host) : host;
  };
  return views.emplace(&dev, std::move(v)).first->second;
}

Context context_for(const DeviceAdapter& a) {
  Context c;
  c.device = a.device;
  c.pool = &harness_pool();
  c.runtime = a.lane();
  return c;
}

// ---- the runner --------------------------------------------------------------------------------------

// Runs one variant on one case. `call` uploads the case's inputs through the adapter, builds the op's
// arguments around a poisoned output, and either returns the downloaded output or std::nullopt with
// *why set when the variant does not support the call. If `us` is set, the call is timed too.
template <typename Args>
using CaseFn = std::function<std::optional<Tensor>(const Variant<Args>&, const DeviceAdapter&, const Context&,
                                                   std::string* why, double* us)>;

// Times fn() until ~0.1 s or 1000 calls; returns microseconds per call.
double time_us(const std::function<void()>& fn, const DeviceAdapter& a) {
  using clock = std::chrono::steady_clock;
  fn();
  a.synchronize();
  int reps = 0;
  const auto t0 = clock::now();
  double elapsed = 0;
  while (elapsed < 0.1 && reps < 1000) {
    fn();
    ++reps;
    a.synchronize();
    elapsed = std::chrono::duration<double>(clock::now() - t0).count();
  }
  return elapsed / reps * 1e6;
}

// What one test did with each variant, keyed by "op variant".
struct VariantStats {
  Device device = Device::Cpu;
  int ran = 0, declined = 0;  // declined: where the case expected it
  int not_judged = 0;         // ran, but the case has no bound for it (matmul_bound)
  std::string skipped;        // why the variant could not run on this machine at all
};

std::map<std::string, VariantStats>& stats() {
  static std::map<std::string, VariantStats> s;
  return s;
}

// CPU variants of a kernel table for an instruction set this CPU lacks: like a device without its
// hardware, skipped and reported, not failed.
std::string missing_hardware(const std::string& variant) {
  for (const backends::cpu::Kernels* k : {&backends::cpu::avx2_kernels(), &backends::cpu::avx512vnni_kernels()}) {
    const std::string base = std::string("cpu.") + k->name;
    if ((variant == base || variant == base + ".a16") && !k->available())
      return std::string("this CPU lacks the ") + k->name + " instructions";
  }
  return {};
}

// The NMSE bound of a case for one variant (by name).
using BoundFn = std::function<double(const std::string& variant)>;
// Why a variant (by name) is expected to decline a case, or null where it must run it.
using DeclineFn = std::function<const char*(const std::string& variant)>;

template <typename Args>
void check_case(const Registry<Args>& reg, const std::string& name, const BoundFn& bound_for, const CaseFn<Args>& call,
                double bytes = 0, double flops = 0, const DeclineFn& expected_decline = nullptr) {
  SCOPED_TRACE(reg.op() + " " + name);
  const Variant<Args>* ref = nullptr;
  for (const auto& v : reg.variants())
    if (v.name == "cpu.ref") ref = &v;
  ASSERT_NE(ref, nullptr) << "no cpu.ref variant of " << reg.op();
  std::string why;
  std::optional<Tensor> want = call(*ref, cpu_adapter(), context_for(cpu_adapter()), &why, nullptr);
  ASSERT_TRUE(want.has_value()) << "cpu.ref does not support the case: " << why;
  std::map<const DeviceAdapter*, Tensor> device_want;  // the reference on each device's inputs
  auto want_for = [&](const DeviceAdapter& dev) -> const Tensor& {
    if (&dev == &cpu_adapter()) return *want;
    auto it = device_want.find(&dev);
    if (it == device_want.end()) {
      std::string ref_why;
      std::optional<Tensor> w = call(*ref, host_view(dev), context_for(cpu_adapter()), &ref_why, nullptr);
      EXPECT_TRUE(w.has_value()) << "cpu.ref does not support the case on " << dev.name << "'s inputs: " << ref_why;
      it = device_want.emplace(&dev, w ? std::move(*w) : *want).first;
    }
    return it->second;
  };
  for (const auto& v : reg.variants()) {
    if (&v == ref) continue;
    VariantStats& st = stats()[reg.op() + " " + v.name];
    st.device = v.device;
    const DeviceAdapter* dev = adapter_for(v.device);
    st.skipped = dev ? missing_hardware(v.name) : "no adapter or no hardware for its device";
    if (!st.skipped.empty()) continue;
    const char* expected = expected_decline ? expected_decline(v.name) : nullptr;
    double us = 0;
    why.clear();
    std::optional<Tensor> got = call(v, *dev, context_for(*dev), &why, perf_mode() ? &us : nullptr);
    if (!got) {
      if (expected) {
        ++st.declined;
      } else {
        ADD_FAILURE() << v.name << " on " << dev->name << " declined the case (" << why
                      << "); a case a variant may decline must say so";
      }
      continue;
    }
    EXPECT_EQ(expected, nullptr) << v.name << " on " << dev->name << " ran a case the harness expects it to decline ("
                                 << expected << "): update the case's expectation";
    const double bound = bound_for(v.name);
    if (bound == kNotJudged) {  // still run: every output must be written (the poison is NaN) and finite
      EXPECT_TRUE(std::isfinite(nmse(*got, want_for(*dev))))
          << v.name << " on " << dev->name << " left an output unset";
      ++st.not_judged;
      continue;
    }
    ++st.ran;
    const double err = nmse(*got, want_for(*dev));
    EXPECT_LE(err, bound + dev->nmse_floor) << v.name << " on " << dev->name << ": nmse " << err;
    if (perf_mode())
      std::printf("[ perf ] %-9s %-40s %-16s %10.2f us %8.2f GB/s %8.2f GFLOP/s  nmse %.2e\n", reg.op().c_str(),
                  name.c_str(), v.name.c_str(), us, bytes / us * 1e-3, flops / us * 1e-3, err);
  }
}

template <typename Args>
void check_case(const Registry<Args>& reg, const std::string& name, double bound, const CaseFn<Args>& call,
                double bytes = 0, double flops = 0, const DeclineFn& expected_decline = nullptr) {
  check_case(reg, name, BoundFn([bound](const std::string&) { return bound; }), call, bytes, flops, expected_decline);
}

// Every test: something checked on the CPU, and every variant this machine can run checked on at least one
// case (a variant that declines them all, even where each decline was expected, is not being tested).
// require_cpu_run: some variant other than cpu.ref ran on the CPU (off for ops that only have cpu.ref so far,
// whose cases wait for their CUDA kernels).
void check_coverage(bool require_cpu_run = true) {
  int cpu_runs = 0;
  for (const auto& [key, s] : stats()) {
    if (!s.skipped.empty()) {
      std::printf("[ harness ] %-32s SKIPPED: %s\n", key.c_str(), s.skipped.c_str());
      continue;
    }
    std::printf("[ harness ] %-32s %5d cases checked, %d declined as expected, %d run but not judged\n", key.c_str(),
                s.ran, s.declined, s.not_judged);
    EXPECT_GT(s.ran, 0) << key << " ran none of the test's cases";
    if (s.device == Device::Cpu) cpu_runs += s.ran;
  }
  if (require_cpu_run) EXPECT_GT(cpu_runs, 0) << "no variant run was checked on the CPU";
  if (!backends::available(Device::Cuda))
    std::printf("[ harness ] CUDA variants not checked: %s\n",
#if KESTREL_HAVE_CUDA
                "no GPU present");
#else
                "CUDA backend not built in");
#endif
}

class OpsHarness : public ::testing::Test {
 protected:
  void SetUp() override { stats().clear(); }
  void TearDown() override { check_coverage(); }
};

// Runs `fn` once for correctness; with `us` also times repeated calls.
template <typename Fn>
void run_maybe_timed(Fn&& fn, const DeviceAdapter& a, double* us) {
  fn();
  a.synchronize();
  if (us) *us = time_us(fn, a);
}

std::string dims(std::initializer_list<int64_t> d) {
  std::string s;
  for (int64_t x : d) s += (s.empty() ? "" : "x") + std::to_string(x);
  return s;
}

// ---- matmul ------------------------------------------------------------------------------------------

using testing::kWeightTypes;

// Activations whose every 32-block is d * (integers in [-qmax, qmax], one of them +-qmax): the 8-bit
// (qmax 127) or 16-bit (qmax 32767) activation quantization of the fast kernels reproduces them
// exactly, so any difference from the reference is a kernel bug, not rounding.
Tensor grid_f32(int64_t m, int64_t k, int qmax, std::mt19937& rng) {
  Tensor t = Tensor::empty_host(DType::F32, {m, k});
  std::uniform_int_distribution<int> q(-qmax, qmax);
  std::uniform_real_distribution<float> d(0.005f * 127 / qmax, 0.05f * 127 / qmax);
  for (int64_t i = 0; i < t.numel(); i += 32) {
    const float scale = d(rng);
    const int64_t n = std::min<int64_t>(32, t.numel() - i);
    for (int64_t j = 0; j < n; ++j) t.ptr<float>()[i + j] = scale * q(rng);
    const int64_t at = std::uniform_int_distribution<int64_t>(0, n - 1)(rng);
    t.ptr<float>()[i + at] = scale * (q(rng) < 0 ? -qmax : qmax);
  }
  return t;
}

enum class Activations { Q8Grid, Q16Grid, Gaussian };

// Which activation precision a matmul variant computes with: 16 bits for the ".a16" CPU variants,
// else 8 bits (the other quantized CPU paths) or the device's own (CUDA, bounded by its nmse_floor).
bool is_a16(const std::string& variant) {
  return variant.ends_with(".a16");
}

// The statistical bounds hold for 64+ outputs (see kQuantBound); a case with fewer outputs judges only the
// variants it is exact for: an a16 variant on 8-bit-grid activations of a few outputs is checked by no
// NMSE bound that means anything (one output near zero over a noisy one: 1.1e-6 seen for Q2_K at 1x1), and
// is held exactly to the 16-bit grid by the Q16Grid cases of every tile height instead.
// The CUDA variants that multiply GGUF-typed weights decoded to bf16 (all but cuda.qmv and cuda.qmma, whose
// weights stay exact or within f16) round each weight
// inside the kernel, which the reference's inputs can't show: like a16 on the 8-bit grid, a few outputs
// are not judged (one near-zero output moved NMSE to 4.7e-3); with 64+ the device's floor holds them, and
// CudaOps.QuantizedWeightsDecodeToTheReferenceOnEveryPath checks the decoded weights bit for bit.
bool rounds_weights_to_bf16(const std::string& variant) {
  return (variant.starts_with("cuda.q") && variant != "cuda.qmv" && variant != "cuda.qmma") ||
         variant.starts_with("cuda.gdequant_");
}
// The variants that round each weight before multiplying: to bf16 (above) or, cuda.gmma, to f16.
bool rounds_weights(const std::string& variant) {
  return rounds_weights_to_bf16(variant) || variant == "cuda.gmma";
}

// The CUDA variants that take grouped integer weights (and only those).
bool grouped_variant(const std::string& variant) {
  return variant == "cuda.gmv" || variant == "cuda.gmma" || variant.starts_with("cuda.gdequant_");
}

double matmul_bound(DType wt, Activations act, const std::string& variant, int64_t outputs) {
  if (!dtype_info(wt).quantized) return kFloatBound;
  if (rounds_weights_to_bf16(variant)) return outputs < 64 ? kNotJudged : kFloatBound;
  const bool exact = is_a16(variant) ? act == Activations::Q16Grid : act == Activations::Q8Grid;
  if (exact) return kFloatBound;
  if (outputs < 64) return kNotJudged;
  return is_a16(variant) ? kQuant16Bound : kQuantBound;
}

// Why a CUDA matmul variant declines an [m, k] x [n, k]^T call with weights of host type wt (the
// register.cpp checks), or null.
const char* cuda_matmul_decline(const std::string& variant, DType wt, int64_t m, int64_t k) {
  if (!variant.starts_with("cuda.")) return nullptr;
  if (grouped_variant(variant)) return "dense weights: the bf16 and cuda.q* variants";
  if (variant == "cuda.w8a8") return "dense weights: W8A8 ones only";
  const bool quantized_variant = variant.starts_with("cuda.q");
  if (quant::is_weight_type(wt) && !quantized_variant) return "GGUF-typed weights: the cuda.q* variants";
  if (!quant::is_weight_type(wt) && quantized_variant) return "bf16 weights: the bf16 variants";
  if (variant == "cuda.qmma" && wt != DType::Q4_K && wt != DType::Q6_K) return "Q4_K or Q6_K weights only";
  if (variant == "cuda.qmma" && m > 16) return "more than 16 rows: the flat GEMM's";
  if (variant == "cuda.qmv" && m > 4) return "more than 4 rows: the flat GEMM's";
  if (variant == "cuda.qgemv" && m > 64) return "more than 64 rows: the dequantizing GEMMs'";
  if (variant == "cuda.gemv" && m > 8) return "more than 8 rows: a GEMM shape, cuBLASLt's";
  if (variant == "cuda.gemv" && k % 32 != 0) return "the GEMV needs K % 32 == 0";
  if (variant == "cuda.cublaslt" && k % 8 != 0) return "cuBLASLt needs K % 8 == 0";
  if (variant == "cuda.gemm_fixed" && k % 32 != 0) return "the fixed-reduction GEMM needs K % 32 == 0";
  return nullptr;
}

void check_matmul(DType wt, int64_t m, int64_t k, int64_t n, bool with_bias, Activations act, uint32_t seed) {
  std::mt19937 rng(seed);
  const Tensor x = act == Activations::Q8Grid    ? grid_f32(m, k, 127, rng)
                   : act == Activations::Q16Grid ? grid_f32(m, k, 32767, rng)
                                                 : rand_f32({m, k}, rng);
  const Tensor w = testing::random_weights(wt, {n, k}, rng), bias = rand_f32({n}, rng);
  CaseFn<MatmulArgs> call = [&](const Variant<MatmulArgs>& v, const DeviceAdapter& a, const Context& ctx,
                                std::string* why, double* us) -> std::optional<Tensor> {
    Tensor dx = put(a, x, Role::Activation), dw = put(a, w, Role::Weight), db = put(a, bias, Role::Param),
           dy = put(a, poisoned(DType::F32, {m, n}), Role::Activation);
    MatmulArgs args{dx, dw, dy, with_bias ? &db : nullptr};
    if (!v.supports(args, why)) return std::nullopt;
    run_maybe_timed([&] { v.run(args, ctx); }, a, us);
    return a.download(dy);
  };
  const double bytes = static_cast<double>(w.nbytes() + x.nbytes()) + m * n * 4.0;
  static const char* const kActNames[] = {"", " q16-grid", " gaussian"};
  check_case(registries().matmul,
             fmt::format("{} {}{}{}", dtype_name(wt), dims({m, k, n}), with_bias ? " +bias" : "",
                         kActNames[static_cast<int>(act)]),
             BoundFn([wt, act, m, n](const std::string& v) { return matmul_bound(wt, act, v, m * n); }), call, bytes,
             2.0 * m * n * k, [wt, m, k](const std::string& v) { return cuda_matmul_decline(v, wt, m, k); });
}

// Why a CUDA matmul variant declines an [m, k] x [n, k]^T call with grouped weights (the register.cpp
// checks, gmv_decline in backends/cuda/gmv.cu), or null.
const char* cuda_grouped_decline(const std::string& variant, DType codes, int64_t m, int64_t k, int64_t group,
                                 bool act_order) {
  if (!variant.starts_with("cuda.")) return nullptr;
  if (!grouped_variant(variant)) return "grouped integer weights: the cuda.gmma, cuda.gmv and cuda.gdequant_* variants";
  if (variant == "cuda.gdequant_cublaslt" && k % 8 != 0) return "cuBLASLt needs K % 8 == 0";
  if (variant == "cuda.gdequant_gemm_fixed" && k % 32 != 0) return "the fixed-reduction GEMM needs K % 32 == 0";
  if (variant == "cuda.gmma") {
    if (codes != DType::U4) return "U4 codes only";
    if (act_order) return "act-order: the dequantizing GEMMs read g_idx";
    if (k % 128 != 0) return "K must be a multiple of 128";
    if (group < k && group % 32 != 0) return "groups must be a multiple of 32 codes";
    if (m == 1 && k < 8192) return "one token and K below 8192: cuda.gmv's";
    return nullptr;
  }
  if (variant != "cuda.gmv") return nullptr;
  if (m > 8) return "more than 8 rows: the dequantizing GEMMs'";
  if (codes == DType::U3) return "U3 codes cross 32-bit words";
  if (act_order) return "act-order: the dequantizing GEMMs read g_idx";
  const int64_t chunk = 128 / code_bits(codes);  // codes per 16-byte load
  if (k % chunk != 0) return "K must fill whole 16-byte chunks of codes";
  if (group < k && group % chunk != 0) return "groups must be whole 16-byte chunks of codes";
  return nullptr;
}

// Grouped integer weights (core/linear.h): the CPU variants decode rows to f32 and take f32 activations, so
// they are held to the float bound against the reference, which reads the format element by element; so is
// cuda.gmv, which decodes every weight exactly in f32 (on bf16 x, as the reference's view of the device
// sees it). The dequantizing CUDA GEMMs round each weight to bf16, cuda.gmma to f16 (the rounds_weights
// rule: judged from 64 outputs, where the device's floor covers the rounding). The codes and group tensors
// travel as they are.
void check_grouped_matmul(DType codes, int64_t m, int64_t k, int64_t n, int64_t group, bool asym, bool act_order,
                          bool with_bias, uint32_t seed) {
  std::mt19937 rng(seed);
  const Tensor x = rand_f32({m, k}, rng), bias = rand_f32({n}, rng);
  const Linear w = testing::random_grouped(codes, n, k, group, asym, act_order, rng);
  CaseFn<MatmulArgs> call = [&](const Variant<MatmulArgs>& v, const DeviceAdapter& a, const Context& ctx,
                                std::string* why, double* us) -> std::optional<Tensor> {
    Linear dw = w;
    for (Tensor* t : {&dw.weight, &dw.groups.scales, &dw.groups.zeros, &dw.groups.g_idx})
      if (!t->empty()) *t = a.upload(*t);
    Tensor dx = put(a, x, Role::Activation), db = put(a, bias, Role::Param),
           dy = put(a, poisoned(DType::F32, {m, n}), Role::Activation);
    MatmulArgs args{dx, dw, dy, with_bias ? &db : nullptr};
    if (!v.supports(args, why)) return std::nullopt;
    run_maybe_timed([&] { v.run(args, ctx); }, a, us);
    return a.download(dy);
  };
  check_case(
      registries().matmul,
      fmt::format("{} g{}{}{} {}{}", dtype_name(codes), group, asym ? " asym" : " sym", act_order ? " act-order" : "",
                  dims({m, k, n}), with_bias ? " +bias" : ""),
      BoundFn([m, n](const std::string& v) { return rounds_weights(v) && m * n < 64 ? kNotJudged : kFloatBound; }),
      call, static_cast<double>(w.nbytes() + x.nbytes()) + m * n * 4.0, 2.0 * m * n * k,
      [=](const std::string& v) { return cuda_grouped_decline(v, codes, m, k, group, act_order); });
}

TEST_F(OpsHarness, Matmul) {
  uint32_t seed = 1;
  for (DType wt : kWeightTypes) {
    const int64_t blk = dtype_info(wt).block_size;
    // K: one block, several blocks, and for float weights sizes that are not a multiple of 8 or 16.
    std::vector<int64_t> ks = {blk * 1, blk * 3, std::max<int64_t>(blk, 256) * 2};
    if (blk == 1) ks.insert(ks.end(), {37, 200});
    for (int64_t k : ks) {
      for (int64_t m : {1, 2, 3, 4, 5, 9})
        for (int64_t n : {1, 7, 66}) check_matmul(wt, m, k, n, (m + n) % 2 == 0, Activations::Q8Grid, seed++);
      check_matmul(wt, 5, k, 96, false, Activations::Gaussian, seed++);
      if (dtype_info(wt).quantized)  // every tile height of the 16-bit path, exactly
        for (int64_t m : {1, 2, 3, 4, 5, 9}) check_matmul(wt, m, k, 80, m % 2 == 0, Activations::Q16Grid, seed++);
    }
    // The device's wider token tiles (up to 64 rows) and, past them, the dequantizing GEMMs.
    if (dtype_info(wt).quantized)
      for (int64_t m : {17, 40, 70}) check_matmul(wt, m, ks[1], 66, m == 40, Activations::Q8Grid, seed++);
  }
  // Prefill-sized calls: the panels and the threaded activation quantization.
  check_matmul(DType::Q4_1, 67, 576, 192, false, Activations::Q8Grid, seed++);
  check_matmul(DType::Q8_0, 33, 512, 300, true, Activations::Gaussian, seed++);
  check_matmul(DType::Q4_1, 67, 576, 192, true, Activations::Q16Grid, seed++);

  // Grouped integer weights: every code width; K a multiple of the group, with a partial last group (K = 72
  // and 200 in groups of 32 and 64), and one group per output channel; odd N; act-order.
  for (DType codes : {DType::U2, DType::U3, DType::U4, DType::U8})
    for (int64_t group : {32, 64})
      for (bool act_order : {false, true}) {
        for (int64_t m : {1, 3, 5}) check_grouped_matmul(codes, m, 128, 7, group, m != 3, act_order, m == 5, seed++);
        check_grouped_matmul(codes, 9, 72, 66, group, true, act_order, false, seed++);
        check_grouped_matmul(codes, 2, 200, 13, group, false, act_order, true, seed++);
      }
  for (DType codes : {DType::U3, DType::U4})
    check_grouped_matmul(codes, 4, 96, 33, 96, true, false, false, seed++);      // one group per output channel
  check_grouped_matmul(DType::U4, 40, 512, 300, 128, true, true, true, seed++);  // threads split N

  // The CUDA paths (cuda.gmv up to 8 rows, the dequantizing GEMMs beyond and for what it declines): the code
  // widths it reads, GPTQ's and AWQ's group sizes and one group per row, K not a multiple of 128 (K = 320 in
  // groups of 32 and 64), odd N, every M up to 8 and past it, with and without bias.
  for (DType codes : {DType::U4, DType::U8, DType::U2})
    for (int64_t group : {32, 64, 128, 512}) {
      if (codes == DType::U2 && group == 32) continue;  // declined by cuda.gmv: covered above
      const int64_t k = group == 128 ? 384 : group == 512 ? 512 : 320;
      for (int64_t m = 1; m <= 8; ++m)
        check_grouped_matmul(codes, m, k, 67, group, (m + group) % 3 != 0, false, m % 2 == 1, seed++);
      check_grouped_matmul(codes, 40, k, 96, group, group != 64, false, true, seed++);
      check_grouped_matmul(codes, 70, k, 66, group, true, false, false, seed++);
    }
  // cuda.gmma's dataflows: the split-K kernel's one and two token tiles (up to 16 rows), the tiled kernel's
  // 32- and 64-token tiles (17..32 rows and beyond, partial tiles), in groups of 32 and 64 codes (one per
  // lane's load) and one per row; and a call with enough blocks for its 128-channel tiles (N = 1100: a
  // partial channel tile too).
  for (int64_t group : {32, 64, 256})
    for (int64_t m : {2, 9, 16, 17, 32, 33, 70})
      check_grouped_matmul(DType::U4, m, 256, 96, group, group != 64, false, m % 2 == 0, seed++);
  check_grouped_matmul(DType::U4, 1000, 128, 1100, 128, true, false, true, seed++);
  check_grouped_matmul(DType::U4, 1, 8192, 40, 128, true, false, true, seed++);  // one token, long rows
  // Act-order on the dequantizing GEMMs, decode-sized and larger.
  for (int64_t m : {1, 8, 33}) check_grouped_matmul(DType::U4, m, 256, 80, 128, true, true, m != 8, seed++);
  check_grouped_matmul(DType::U3, 9, 192, 70, 64, true, false, false, seed++);  // U3 beyond cuda.gmv
}

// W8A8 weights (core/w8a8.h): the reference quantizes each row of x and sums the codes' products exactly;
// the CPU variants multiply the rows as they quantize in f32, cuda.w8a8 runs cuBLASLt's 8-bit GEMMs on the
// same codes (bf16 x, as the reference's view of the device sees it). All are held to the float bound.
const char* cuda_w8a8_decline(const std::string& variant, int64_t k, int64_t n) {
  if (!variant.starts_with("cuda.")) return nullptr;
  if (variant != "cuda.w8a8") return "W8A8 weights: the cuda.w8a8 variant";
  if (k % 16 != 0 || n % 16 != 0) return "K and N must be multiples of 16";
  return nullptr;
}

void check_w8a8_matmul(DType t, int64_t m, int64_t k, int64_t n, bool with_bias, uint32_t seed) {
  std::mt19937 rng(seed);
  Tensor x = rand_f32({m, k}, rng);
  x.ptr<float>()[0] = 9.f;  // an outlier: the row's scale follows its largest value
  const Tensor bias = rand_f32({n}, rng);
  const W8Matrix q = quantize_w8_rows(rand_f32({n, k}, rng, 0.05f), t);
  const Linear w = Linear::scaled(q.codes, q.scales);
  CaseFn<MatmulArgs> call = [&](const Variant<MatmulArgs>& v, const DeviceAdapter& a, const Context& ctx,
                                std::string* why, double* us) -> std::optional<Tensor> {
    const Linear dw = Linear::scaled(a.upload(w.weight), a.upload(w.channel_scales));
    Tensor dx = put(a, x, Role::Activation), db = put(a, bias, Role::Param),
           dy = put(a, poisoned(DType::F32, {m, n}), Role::Activation);
    MatmulArgs args{dx, dw, dy, with_bias ? &db : nullptr};
    if (!v.supports(args, why)) return std::nullopt;
    run_maybe_timed([&] { v.run(args, ctx); }, a, us);
    return a.download(dy);
  };
  check_case(registries().matmul,
             fmt::format("{} w8a8 {}{}", dtype_name(t), dims({m, k, n}), with_bias ? " +bias" : ""), kFloatBound, call,
             static_cast<double>(w.nbytes() + x.nbytes()) + m * n * 4.0, 2.0 * m * n * k,
             [=](const std::string& v) { return cuda_w8a8_decline(v, k, n); });
}

TEST_F(OpsHarness, MatmulW8A8) {
  uint32_t seed = 500;
  for (DType t : {DType::I8, DType::F8E4M3}) {
    for (int64_t m : {1, 3, 17, 64})
      for (auto [k, n] : {std::pair<int64_t, int64_t>{256, 96}, {48, 16}, {512, 80}})
        check_w8a8_matmul(t, m, k, n, m % 2 == 1, seed++);
    check_w8a8_matmul(t, 5, 40, 32, true, seed++);   // K % 16 != 0: the CPU only
    check_w8a8_matmul(t, 5, 128, 7, false, seed++);  // N % 16 != 0: the CPU only
    check_w8a8_matmul(t, 300, 1024, 256, true, seed++);
  }
}

// ---- rmsnorm, add, silu_mul --------------------------------------------------------------------------

// The run of a case that may write its input (y aliasing x): timed first (an in-place result is final only
// after one run), then x uploaded again and the op run once more for the result.
template <typename Args>
Tensor run_in_place(const Variant<Args>& v, const Args& args, const Context& ctx, const DeviceAdapter& a, double* us,
                    bool in_place, Tensor& dx, const Tensor& x, const Tensor& out) {
  if (us) *us = time_us([&] { v.run(args, ctx); }, a);
  if (in_place) dx = put(a, x, Role::Activation);
  v.run(args, ctx);
  a.synchronize();
  return a.download(out);
}

TEST_F(OpsHarness, Rmsnorm) {
  uint32_t seed = 100;
  for (int64_t rows : {1, 3, 64})
    for (int64_t d : {1, 7, 64, 576, 1000}) {
      std::mt19937 rng(seed++);
      const Tensor x = rand_f32({rows, d}, rng, 3.f), w = rand_f32({d}, rng);
      for (bool in_place : {false, true}) {
        CaseFn<RmsnormArgs> call = [&](const Variant<RmsnormArgs>& v, const DeviceAdapter& a, const Context& ctx,
                                       std::string* why, double* us) -> std::optional<Tensor> {
          Tensor dx = put(a, x, Role::Activation), dw = put(a, w, Role::Param),
                 dy = put(a, poisoned(DType::F32, {rows, d}), Role::Activation);
          Tensor& out = in_place ? dx : dy;
          RmsnormArgs args{dx, dw, 1e-5f, out};
          if (!v.supports(args, why)) return std::nullopt;
          return run_in_place(v, args, ctx, a, us, in_place, dx, x, out);
        };
        check_case(registries().rmsnorm, dims({rows, d}) + (in_place ? " in-place" : ""), kFloatBound, call,
                   rows * d * 8.0, rows * d * 4.0);
      }
    }
}

void check_binary(const Registry<BinaryArgs>& reg, uint32_t seed, double bound) {
  for (int64_t n : {1, 7, 64, 1000, 1536 * 9 + 5, 1 << 16}) {
    std::mt19937 rng(seed++);
    const Tensor x = rand_f32({n}, rng, 4.f), z = rand_f32({n}, rng);
    CaseFn<BinaryArgs> call = [&](const Variant<BinaryArgs>& v, const DeviceAdapter& a, const Context& ctx,
                                  std::string* why, double* us) -> std::optional<Tensor> {
      Tensor da = put(a, x, Role::Activation), db = put(a, z, Role::Activation),
             dy = put(a, poisoned(DType::F32, {n}), Role::Activation);
      BinaryArgs args{da, db, dy};
      if (!v.supports(args, why)) return std::nullopt;
      run_maybe_timed([&] { v.run(args, ctx); }, a, us);
      return a.download(dy);
    };
    check_case(reg, dims({n}), bound, call, n * 12.0, n * 1.0);
  }
}

// The harness's own rules, on a registry holding add's CPU variants and one that declines everything.
TEST(OpsHarnessRules, DeclinesFailUnlessTheCaseExpectsThem) {
  Registry<BinaryArgs> reg("add");
  for (const auto& v : registries().add.variants())
    if (v.name == "cpu.ref" || v.name == "cpu.simd") reg.add(v);
  reg.add({"cpu.never", Device::Cpu, 1,
           [](const BinaryArgs&, std::string* why) {
             *why = "declines everything";
             return false;
           },
           [](const BinaryArgs&, const Context&) {}});
  std::mt19937 rng(1);
  const Tensor x = rand_f32({8}, rng), z = rand_f32({8}, rng);
  CaseFn<BinaryArgs> call = [&](const Variant<BinaryArgs>& v, const DeviceAdapter& a, const Context& ctx,
                                std::string* why, double*) -> std::optional<Tensor> {
    Tensor da = put(a, x, Role::Activation), db = put(a, z, Role::Activation),
           dy = put(a, poisoned(DType::F32, {8}), Role::Activation);
    BinaryArgs args{da, db, dy};
    if (!v.supports(args, why)) return std::nullopt;
    v.run(args, ctx);
    return a.download(dy);
  };
  stats().clear();
  EXPECT_NONFATAL_FAILURE(check_case(reg, "n8", kFloatBound, call), "cpu.never on cpu declined the case");
  auto expect_never = [](const std::string& v) { return v == "cpu.never" ? "it never runs" : nullptr; };
  check_case(reg, "n8", kFloatBound, call, 0, 0, expect_never);
  EXPECT_EQ(stats()["add cpu.never"].declined, 1);
  // Declining every case, each decline expected, still leaves the variant untested.
  EXPECT_NONFATAL_FAILURE(check_coverage(), "add cpu.never ran none of the test's cases");
  stats().clear();
  // An expected decline that does not happen is a stale expectation.
  auto expect_simd_decline = [](const std::string& v) {
    return v == "cpu.never" ? "it never runs" : v == "cpu.simd" ? "wrongly" : nullptr;
  };
  EXPECT_NONFATAL_FAILURE(check_case(reg, "n8", kFloatBound, call, 0, 0, expect_simd_decline),
                          "cpu.simd on cpu ran a case the harness expects it to decline");
  stats().clear();
}

TEST_F(OpsHarness, Add) {
  check_binary(registries().add, 200, kFloatBound);
}

// The SIMD exp is a polynomial with ~2e-7 relative error: NMSE ~1e-13.
TEST_F(OpsHarness, SiluMul) {
  check_binary(registries().silu_mul, 300, kFloatBound);
}

TEST_F(OpsHarness, GeluMul) {
  check_binary(registries().gelu_mul, 320, kFloatBound);
}

// ---- the encoder's ops: layernorm, gelu, encoder_attention -------------------------------------------

TEST_F(OpsHarness, Layernorm) {
  uint32_t seed = 340;
  for (int64_t rows : {1, 3, 64})
    for (int64_t d : {1, 7, 64, 384, 1000}) {
      std::mt19937 rng(seed++);
      // A mean far from zero, as a residual stream can have: a one-pass variance would cancel badly.
      Tensor x = rand_f32({rows, d}, rng, 3.f);
      for (int64_t i = 0; i < x.numel(); ++i) x.ptr<float>()[i] += 20.f;
      const Tensor w = rand_f32({d}, rng), b = rand_f32({d}, rng);
      for (bool in_place : {false, true}) {
        CaseFn<LayernormArgs> call = [&](const Variant<LayernormArgs>& v, const DeviceAdapter& a, const Context& ctx,
                                         std::string* why, double* us) -> std::optional<Tensor> {
          Tensor dx = put(a, x, Role::Activation), dw = put(a, w, Role::Param), db = put(a, b, Role::Param),
                 dy = put(a, poisoned(DType::F32, {rows, d}), Role::Activation);
          Tensor& out = in_place ? dx : dy;
          LayernormArgs args{dx, dw, db, 1e-12f, out};
          if (!v.supports(args, why)) return std::nullopt;
          return run_in_place(v, args, ctx, a, us, in_place, dx, x, out);
        };
        check_case(registries().layernorm, dims({rows, d}) + (in_place ? " in-place" : ""), kFloatBound, call,
                   rows * d * 8.0, rows * d * 7.0);
      }
    }
}

TEST_F(OpsHarness, Gelu) {
  uint32_t seed = 360;
  for (int64_t n : {1, 7, 64, 1000, 1536 * 9 + 5, 1 << 16}) {
    std::mt19937 rng(seed++);
    const Tensor x = rand_f32({n}, rng, 4.f);
    for (bool in_place : {false, true}) {
      CaseFn<UnaryArgs> call = [&](const Variant<UnaryArgs>& v, const DeviceAdapter& a, const Context& ctx,
                                   std::string* why, double* us) -> std::optional<Tensor> {
        Tensor dx = put(a, x, Role::Activation), dy = put(a, poisoned(DType::F32, {n}), Role::Activation);
        Tensor& out = in_place ? dx : dy;
        UnaryArgs args{dx, out};
        if (!v.supports(args, why)) return std::nullopt;
        return run_in_place(v, args, ctx, a, us, in_place, dx, x, out);
      };
      check_case(registries().gelu, dims({n}) + (in_place ? " in-place" : ""), kFloatBound, call, n * 8.0, n * 10.0);
    }
  }
}

// How a case masks keys: not at all, right padding (the tokenizer's: the last keys of a sequence), or
// random holes; a sequence may also lose every key (its rows are zeros).
enum class KeyMask { None, Padding, Holes };

void check_encoder_attention(int64_t n_heads, int64_t head_dim, const std::vector<int32_t>& lens, KeyMask masking,
                             uint32_t seed) {
  std::mt19937 rng(seed);
  EncoderAttentionBatch batch;
  batch.scale = 1.f / std::sqrt(static_cast<float>(head_dim));
  int32_t T = 0;
  for (int32_t len : lens) {
    batch.seqs.push_back({T, len});
    T += len;
  }
  Tensor mask = Tensor::empty_host(DType::I32, {T});
  for (const EncoderSeq& s : batch.seqs) {
    const int32_t pad = masking == KeyMask::Padding ? std::uniform_int_distribution<int32_t>(0, s.len)(rng) : 0;
    for (int32_t j = 0; j < s.len; ++j)
      mask.ptr<int32_t>()[s.begin + j] =
          masking == KeyMask::Holes ? std::uniform_int_distribution<int>(0, 3)(rng) != 0 : j < s.len - pad;
  }
  const Tensor qkv = rand_f32({T, 3 * n_heads * head_dim}, rng, 2.f);
  CaseFn<EncoderAttentionArgs> call = [&](const Variant<EncoderAttentionArgs>& v, const DeviceAdapter& a,
                                          const Context& ctx, std::string* why, double* us) -> std::optional<Tensor> {
    Tensor dqkv = put(a, qkv, Role::Activation),
           dout = put(a, poisoned(DType::F32, {T, n_heads, head_dim}), Role::Activation);
    EncoderAttentionBatch b = batch;
    if (masking != KeyMask::None) b.key_mask = put(a, mask, Role::Index);
    EncoderAttentionArgs args{dqkv, b, dout};
    if (!v.supports(args, why)) return std::nullopt;
    run_maybe_timed([&] { v.run(args, ctx); }, a, us);
    return a.download(dout);
  };
  std::string desc = fmt::format("h{} d{} mask {} seqs", n_heads, head_dim, static_cast<int>(masking));
  double flops = 0;
  for (int32_t len : lens) {
    desc += fmt::format(" {}", len);
    flops += 4.0 * n_heads * head_dim * len * len;
  }
  check_case(registries().encoder_attention, desc, kFloatBound, call, 2.0 * qkv.nbytes(), flops);
}

TEST_F(OpsHarness, EncoderAttention) {
  uint32_t seed = 380;
  const std::vector<std::vector<int32_t>> batches = {
      {1}, {9}, {7, 1, 33}, {128, 5}, {2, 300, 17, 64},
  };
  for (KeyMask m : {KeyMask::None, KeyMask::Padding, KeyMask::Holes})
    for (auto [heads, dim] : {std::pair<int64_t, int64_t>{12, 32}, {4, 64}, {2, 17}, {1, 100}})
      for (const auto& lens : batches) check_encoder_attention(heads, dim, lens, m, seed++);
}

// Two outputs compared as one: a's values then b's.
Tensor concat_outputs(const Tensor& a, const Tensor& b) {
  Tensor both = Tensor::empty_host(DType::F32, {a.numel() + b.numel()});
  std::memcpy(both.ptr<float>(), a.data, a.nbytes());
  std::memcpy(both.ptr<float>() + a.numel(), b.data, b.nbytes());
  return both;
}

TEST_F(OpsHarness, AddRmsnorm) {
  uint32_t seed = 150;
  for (int64_t rows : {1, 5, 33})
    for (int64_t d : {7, 64, 576, 4096}) {
      std::mt19937 rng(seed++);
      const Tensor x = rand_f32({rows, d}, rng, 2.f), r = rand_f32({rows, d}, rng, 2.f), w = rand_f32({d}, rng);
      for (bool alias_r : {false, true}) {
        CaseFn<AddRmsnormArgs> call = [&](const Variant<AddRmsnormArgs>& v, const DeviceAdapter& a, const Context& ctx,
                                          std::string* why, double* us) -> std::optional<Tensor> {
          Tensor dx = put(a, x, Role::Activation), dr = put(a, r, Role::Activation), dw = put(a, w, Role::Param),
                 dy = put(a, poisoned(DType::F32, {rows, d}), Role::Activation);
          Tensor& out = alias_r ? dr : dy;
          AddRmsnormArgs args{dx, dr, dw, 1e-5f, out};
          if (!v.supports(args, why)) return std::nullopt;
          if (us) *us = time_us([&] { v.run(args, ctx); }, a);  // x accumulates while timing: re-upload
          dx = put(a, x, Role::Activation);
          dr = put(a, r, Role::Activation);
          v.run(args, ctx);
          a.synchronize();
          return concat_outputs(a.download(dx), a.download(out));
        };
        check_case(registries().add_rmsnorm, dims({rows, d}) + (alias_r ? " y=r" : ""), kFloatBound, call,
                   rows * d * 16.0, rows * d * 5.0);
      }
    }
}

// swiglu and geglu: the gated activations over a fused gate/up output.
void check_gated(const Registry<SwigluArgs>& reg, uint32_t seed) {
  for (int64_t rows : {1, 3, 40})
    for (int64_t f : {5, 64, 1536}) {
      std::mt19937 rng(seed++);
      const Tensor gu = rand_f32({rows, 2 * f}, rng, 4.f);
      CaseFn<SwigluArgs> call = [&](const Variant<SwigluArgs>& v, const DeviceAdapter& a, const Context& ctx,
                                    std::string* why, double* us) -> std::optional<Tensor> {
        Tensor dg = put(a, gu, Role::Activation), dy = put(a, poisoned(DType::F32, {rows, f}), Role::Activation);
        SwigluArgs args{dg, dy};
        if (!v.supports(args, why)) return std::nullopt;
        run_maybe_timed([&] { v.run(args, ctx); }, a, us);
        return a.download(dy);
      };
      check_case(reg, dims({rows, f}), kFloatBound, call, rows * f * 12.0, rows * f * 4.0);
    }
}

TEST_F(OpsHarness, Swiglu) {
  check_gated(registries().swiglu, 350);
}

TEST_F(OpsHarness, Geglu) {
  check_gated(registries().geglu, 370);
}

// ---- rope --------------------------------------------------------------------------------------------

TEST_F(OpsHarness, Rope) {
  uint32_t seed = 400;
  for (auto style : {RopeParams::Style::Adjacent, RopeParams::Style::HalfSplit})
    for (int64_t t : {1, 7})
      for (int64_t h : {3, 9})
        for (int64_t d : {64, 128})
          for (int rot : {static_cast<int>(d), static_cast<int>(d / 2)})
            for (bool llama3 : {false, true}) {
              std::mt19937 rng(seed++);
              const Tensor x = rand_f32({t, h, d}, rng);
              Tensor pos = Tensor::empty_host(DType::I32, {t});
              std::uniform_int_distribution<int32_t> p(0, 9000);
              for (int64_t i = 0; i < t; ++i) pos.ptr<int32_t>()[i] = p(rng);
              RopeParams rp;
              rp.style = style;
              rp.rot_dim = rot;
              rp.theta = llama3 ? 500000.f : 10000.f;
              if (llama3) rp.llama3_factor = 8.f;
              CaseFn<RopeArgs> call = [&](const Variant<RopeArgs>& v, const DeviceAdapter& a, const Context& ctx,
                                          std::string* why, double* us) -> std::optional<Tensor> {
                Tensor dx = put(a, x, Role::Activation), dp = put(a, pos, Role::Index);
                RopeArgs args{dx, dp, rp};
                if (!v.supports(args, why)) return std::nullopt;
                if (us) *us = time_us([&] { v.run(args, ctx); }, a);
                dx = put(a, x, Role::Activation);
                v.run(args, ctx);
                a.synchronize();
                return a.download(dx);
              };
              check_case(registries().rope,
                         fmt::format("{} {} rot{}{}", style == RopeParams::Style::Adjacent ? "adjacent" : "half",
                                     dims({t, h, d}), rot, llama3 ? " llama3" : ""),
                         kFloatBound, call, t * h * d * 8.0, t * h * d * 3.0);
            }
}

// ---- embed -------------------------------------------------------------------------------------------

TEST_F(OpsHarness, Embed) {
  uint32_t seed = 500;
  for (DType wt : kWeightTypes)
    for (int64_t t : {1, 5, 40})
      for (float scale : {1.f, 25.3f}) {  // Gemma scales its embeddings by sqrt(hidden)
        std::mt19937 rng(seed++);
        const int64_t vocab = 50, d = 512;
        const Tensor table = testing::random_weights(wt, {vocab, d}, rng);
        Tensor ids = Tensor::empty_host(DType::I32, {t});
        std::uniform_int_distribution<int32_t> id(0, vocab - 1);
        for (int64_t i = 0; i < t; ++i) ids.ptr<int32_t>()[i] = id(rng);
        CaseFn<EmbedArgs> call = [&](const Variant<EmbedArgs>& v, const DeviceAdapter& a, const Context& ctx,
                                     std::string* why, double* us) -> std::optional<Tensor> {
          Tensor dt = put(a, table, Role::Table), di = put(a, ids, Role::Index),
                 dout = put(a, poisoned(DType::F32, {t, d}), Role::Activation);
          EmbedArgs args{dt, di, dout, scale};
          if (!v.supports(args, why)) return std::nullopt;
          run_maybe_timed([&] { v.run(args, ctx); }, a, us);
          return a.download(dout);
        };
        check_case(registries().embed, fmt::format("{} {} scale {}", dtype_name(wt), dims({t, d}), scale), kFloatBound,
                   call, t * (table.row_nbytes() + d * 4.0));
      }
}

// ---- scatter_rows ------------------------------------------------------------------------------------

// Prompt embeddings over a step's embedded rows: e rows of the output replaced, in a shuffled order, the
// others left as they were.
TEST_F(OpsHarness, ScatterRows) {
  uint32_t seed = 540;
  for (int64_t t : {1, 6, 40})
    for (int64_t d : {64, 576})
      for (int64_t e : {(t + 1) / 2, t}) {
        std::mt19937 rng(seed++);
        const Tensor dst = rand_f32({t, d}, rng), src = rand_f32({e, d}, rng);
        std::vector<int32_t> order(static_cast<size_t>(t));
        std::iota(order.begin(), order.end(), 0);
        std::shuffle(order.begin(), order.end(), rng);
        Tensor rows = Tensor::empty_host(DType::I32, {e});
        std::copy_n(order.begin(), e, rows.ptr<int32_t>());
        CaseFn<ScatterRowsArgs> call = [&](const Variant<ScatterRowsArgs>& v, const DeviceAdapter& a,
                                           const Context& ctx, std::string* why, double* us) -> std::optional<Tensor> {
          Tensor ds = put(a, src, Role::Activation), dr = put(a, rows, Role::Index), dd = put(a, dst, Role::Activation);
          ScatterRowsArgs args{ds, dr, dd};
          if (!v.supports(args, why)) return std::nullopt;
          run_maybe_timed([&] { v.run(args, ctx); }, a, us);
          return a.download(dd);
        };
        check_case(registries().scatter_rows, fmt::format("{} into {}", dims({e, d}), t), kFloatBound, call,
                   e * d * 8.0);
      }
}

// ---- paged KV cache: kv_write and attention ----------------------------------------------------------

struct KvShape {
  int64_t n_kv_heads, head_dim, block_size, n_blocks;
};

// A KV page format as the ops see it: the element or code type and, for code types, the scale group.
struct PageType {
  PageType(DType type, int g = 0) : t(type), group(g) {}  // NOLINT: a plain type converts implicitly
  DType t;
  int group;
  int n_params() const { return group == 0 ? 0 : t == DType::F8E4M3 ? 1 : 2; }
  std::string name() const { return group ? fmt::format("{}/g{}", dtype_name(t), group) : std::string(dtype_name(t)); }
};

// A cache layer filled with random values, so that kv_write must leave the slots it does not own alone.
KvLayer random_cache(const PageType& p, const KvShape& s, std::mt19937& rng) {
  const std::vector<int64_t> shape = {s.n_blocks, s.block_size, s.n_kv_heads, s.head_dim};
  KvLayer c{Tensor::empty_host(p.t, shape), Tensor::empty_host(p.t, shape), {}, {}};
  if (p.group)
    for (Tensor* t : {&c.k_params, &c.v_params})
      *t = Tensor::empty_host(DType::F16, {s.n_blocks, s.block_size, s.n_kv_heads, s.head_dim / p.group, p.n_params()});
  const int64_t row = s.n_kv_heads * s.head_dim;
  for (int64_t slot = 0; slot < s.n_blocks * s.block_size; ++slot) {
    const Tensor r = rand_f32({2, row}, rng);
    kv_store(c, false, slot, r.ptr<float>());
    kv_store(c, true, slot, r.ptr<float>() + row);
  }
  return c;
}

// The layer on an adapter's device: pages as the device takes them, params as they are.
KvLayer put_cache(const DeviceAdapter& a, const KvLayer& c) {
  KvLayer d{put(a, c.k, Role::Cache), put(a, c.v, Role::Cache), {}, {}};
  if (c.has_params()) {
    d.k_params = put(a, c.k_params, Role::KvParams);
    d.v_params = put(a, c.v_params, Role::KvParams);
  }
  return d;
}

// Everything a cache write stored, as f32: K and V pages (code values for code pages) and their params.
Tensor stored(const DeviceAdapter& a, const KvLayer& d) {
  Tensor all = concat_outputs(a.download(d.k), a.download(d.v));
  if (d.has_params()) all = concat_outputs(all, concat_outputs(a.download(d.k_params), a.download(d.v_params)));
  return all;
}

// The values a layer's code pages hold, decoded on the host from the downloaded code values and params
// (x = code * scale, + min for the integer codes): f32 [2, slots * row], K then V.
Tensor decoded(const DeviceAdapter& a, const KvLayer& d) {
  const int64_t n = d.k.numel(), group = d.group();
  Tensor out = Tensor::empty_host(DType::F32, {2, n});
  for (int v = 0; v < 2; ++v) {
    const Tensor codes = a.download(v ? d.v : d.k), params = a.download(v ? d.v_params : d.k_params);
    const int64_t np = params.dim(4);
    for (int64_t i = 0; i < n; ++i) {
      const float* p = params.ptr<float>() + i / group * np;
      const float x = codes.ptr<float>()[i] * p[0];
      out.ptr<float>()[v * n + i] = np == 2 ? x + p[1] : x;
    }
  }
  return out;
}

// Bytes of one token's K or V in pages of this type, params included.
double page_bytes(const PageType& p, int64_t n_kv_heads, int64_t head_dim) {
  return static_cast<double>(row_bytes(p.t, n_kv_heads * head_dim)) +
         (p.group ? 2.0 * p.n_params() * n_kv_heads * head_dim / p.group : 0.0);
}

// Quantized pages are written by one codec (core/kv_codec.h, dequant.cpp) on every backend: the bytes, and
// so the stored code values and params, must be identical to the reference's.
double kv_write_bound(const PageType& p) {
  return p.group || dtype_info(p.t).quantized ? 0.0 : kFloatBound;
}

// The quantized formats --kv-type offers (engine/kv_format.cpp), and U4 with int8's group size. llama.cpp's
// cache types (q8_0, q5_1) are CPU formats: the CUDA adapter hands its variants bf16 pages for them
// (cuda_dtype), so there they run as bf16 cases.
const std::vector<PageType>& quantized_pages() {
  static const std::vector<PageType> p = {{DType::F8E4M3, 64}, {DType::U8, 64}, {DType::U4, 32}, {DType::U4, 64},
                                          {DType::U2, 32},     {DType::Q8_0},   {DType::Q5_1}};
  return p;
}

TEST_F(OpsHarness, KvWrite) {
  uint32_t seed = 600;
  std::vector<PageType> types = {DType::F32, DType::F16, DType::BF16};
  types.insert(types.end(), quantized_pages().begin(), quantized_pages().end());
  for (const PageType& t : types)
    for (KvShape s : {KvShape{1, 64, 16, 4}, KvShape{3, 64, 32, 5}, KvShape{8, 128, 16, 9}})
      for (int64_t n_tok : {1, 13, 40}) {
        std::mt19937 rng(seed++);
        const KvLayer cache = random_cache(t, s, rng);
        const Tensor k = rand_f32({n_tok, s.n_kv_heads, s.head_dim}, rng),
                     v = rand_f32({n_tok, s.n_kv_heads, s.head_dim}, rng);
        // Distinct random slots.
        std::vector<int32_t> all(s.n_blocks * s.block_size);
        std::iota(all.begin(), all.end(), 0);
        std::shuffle(all.begin(), all.end(), rng);
        Tensor slots = Tensor::empty_host(DType::I32, {n_tok});
        std::copy_n(all.begin(), n_tok, slots.ptr<int32_t>());
        CaseFn<KvWriteArgs> call = [&](const Variant<KvWriteArgs>& var, const DeviceAdapter& a, const Context& ctx,
                                       std::string* why, double* us) -> std::optional<Tensor> {
          KvLayer dc = put_cache(a, cache);
          Tensor dk = put(a, k, Role::Activation), dv = put(a, v, Role::Activation), ds = put(a, slots, Role::Index);
          KvWriteArgs args{dk, dv, ds, dc};
          if (!var.supports(args, why)) return std::nullopt;
          run_maybe_timed([&] { var.run(args, ctx); }, a, us);
          return stored(a, dc);
        };
        check_case(registries().kv_write,
                   fmt::format("{} heads{} d{} bs{} T{}", t.name(), s.n_kv_heads, s.head_dim, s.block_size, n_tok),
                   kv_write_bound(t), call,
                   2.0 * n_tok * (s.n_kv_heads * s.head_dim * 4 + page_bytes(t, s.n_kv_heads, s.head_dim)));
      }
}

TEST_F(OpsHarness, RopeKvWrite) {
  uint32_t seed = 650;
  struct Shape {
    int64_t heads;
    KvShape kv;
    int rot;
  };
  for (const PageType& t : std::vector<PageType>{
           DType::F32, DType::BF16, {DType::F8E4M3, 64}, {DType::U8, 64}, {DType::U4, 32}, {DType::U2, 32}})
    for (Shape sh : {Shape{4, {2, 64, 16, 4}, 64}, Shape{32, {8, 128, 16, 6}, 128}, Shape{6, {3, 64, 8, 5}, 32}})
      for (int64_t n_tok : {1, 9})
        for (bool qk_norm : {false, true})
          for (auto style : {RopeParams::Style::Adjacent, RopeParams::Style::HalfSplit}) {
            std::mt19937 rng(seed++);
            const KvShape& s = sh.kv;
            const int64_t H = sh.heads, Hkv = s.n_kv_heads, D = s.head_dim;
            const KvLayer cache = random_cache(t, s, rng);
            const Tensor qkv = rand_f32({n_tok, (H + 2 * Hkv) * D}, rng);
            const Tensor qn = rand_f32({D}, rng), kn = rand_f32({D}, rng);
            std::vector<int32_t> all(s.n_blocks * s.block_size);
            std::iota(all.begin(), all.end(), 0);
            std::shuffle(all.begin(), all.end(), rng);
            Tensor slots = Tensor::empty_host(DType::I32, {n_tok}), pos = Tensor::empty_host(DType::I32, {n_tok});
            std::copy_n(all.begin(), n_tok, slots.ptr<int32_t>());
            std::uniform_int_distribution<int32_t> p(0, 9000);
            for (int64_t i = 0; i < n_tok; ++i) pos.ptr<int32_t>()[i] = p(rng);
            RopeParams rp;
            rp.style = style;
            rp.rot_dim = sh.rot;
            rp.theta = 500000.f;
            rp.llama3_factor = 8.f;
            CaseFn<RopeKvWriteArgs> call = [&](const Variant<RopeKvWriteArgs>& var, const DeviceAdapter& a,
                                               const Context& ctx, std::string* why,
                                               double* us) -> std::optional<Tensor> {
              KvLayer dc = put_cache(a, cache);
              Tensor dqkv = put(a, qkv, Role::Activation), dpos = put(a, pos, Role::Index),
                     ds = put(a, slots, Role::Index), dqn = put(a, qn, Role::Param), dkn = put(a, kn, Role::Param),
                     dq = put(a, poisoned(DType::F32, {n_tok, H, D}), Role::Activation);
              const QkNorm norm{qk_norm ? &dqn : nullptr, qk_norm ? &dkn : nullptr, 1e-6f};
              RopeKvWriteArgs args{dqkv, dpos, ds, rp, norm, dq, dc};
              if (!var.supports(args, why)) return std::nullopt;
              run_maybe_timed([&] { var.run(args, ctx); }, a, us);
              // Code pages are judged on the values they decode to: a rotation rounded differently may move
              // a code by one step, which the code-page bound below allows.
              return concat_outputs(a.download(dq), cache.has_params() ? decoded(a, dc) : stored(a, dc));
            };
            check_case(
                registries().rope_kv_write,
                fmt::format("{} h{}/{} d{} rot{} T{}{}{}", t.name(), H, Hkv, D, sh.rot, n_tok,
                            qk_norm ? " qk-norm" : "", style == RopeParams::Style::Adjacent ? " adjacent" : " half"),
                t.group ? kCodeStepBound : kFloatBound, call, n_tok * (H + 2 * Hkv) * D * (4.0 + 4.0));
          }
}

struct SeqSpec {
  int32_t q_len, kv_len;
};

// Why a CUDA attention variant declines a batch of this geometry (the register.cpp checks), or null.
const char* cuda_attention_decline(const std::string& variant, const PageType& t, int64_t head_dim, bool decode_only,
                                   int32_t window) {
  const bool tiled = variant == "cuda.decode_splitkv" || variant == "cuda.flash_prefill";
  // fp8 at head_dim 64 has one 2-byte scale per row, below the decode kernel's 4-byte param copies.
  if (variant == "cuda.decode_splitkv" && t.t == DType::F8E4M3 && head_dim / t.group < 2)
    return "fp8 pages need two scales per row";
  if (tiled && head_dim != 64 && head_dim != 128) return "the tiled kernels are built for head sizes 64 and 128";
  if (tiled && window > 0) return "the tiled kernels take no sliding window";
  if (variant == "cuda.decode_splitkv" && !decode_only) return "the decode kernel takes one query per sequence";
  return nullptr;
}

void check_attention(const PageType& t, int64_t n_heads, const KvShape& s, const std::vector<SeqSpec>& specs,
                     uint32_t seed, int32_t window = 0) {
  std::mt19937 rng(seed);
  int64_t n_tok = 0, blocks_needed = 0, max_blocks = 1;
  bool decode_only = true;
  for (const SeqSpec& sp : specs) {
    n_tok += sp.q_len;
    const int64_t nb = (sp.kv_len + s.block_size - 1) / s.block_size;
    blocks_needed += nb;
    max_blocks = std::max(max_blocks, nb);
    decode_only &= sp.q_len == 1;
  }
  KvShape shape = s;
  shape.n_blocks = blocks_needed + 3;  // some blocks belong to nobody
  const KvLayer cache = random_cache(t, shape, rng);
  // Each sequence gets a random, non-contiguous set of blocks: row i of the table (padded with -1, the
  // layout device variants read from AttentionBatch::block_tables), which the host view points into.
  std::vector<int32_t> perm(shape.n_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  const int64_t n_seqs = static_cast<int64_t>(specs.size());
  Tensor tables = Tensor::empty_host(DType::I32, {n_seqs, max_blocks});
  Tensor info = Tensor::empty_host(DType::I32, {n_seqs, 3});
  std::fill_n(tables.ptr<int32_t>(), tables.numel(), -1);
  AttentionBatch batch;
  batch.scale = 1.f / std::sqrt(static_cast<float>(s.head_dim));
  batch.window = window;
  int32_t next_block = 0, q_begin = 0;
  double kv_bytes = 0;
  for (int64_t i = 0; i < n_seqs; ++i) {
    const SeqSpec& sp = specs[i];
    int32_t* row = tables.ptr<int32_t>() + i * max_blocks;
    for (int64_t b = 0; b < (sp.kv_len + s.block_size - 1) / s.block_size; ++b) row[b] = perm[next_block++];
    batch.seqs.push_back({q_begin, sp.q_len, sp.kv_len, row});
    int32_t* seq_info = info.ptr<int32_t>() + i * 3;
    seq_info[0] = q_begin;
    seq_info[1] = sp.q_len;
    seq_info[2] = sp.kv_len;
    q_begin += sp.q_len;
    kv_bytes += 2.0 * sp.kv_len * page_bytes(t, s.n_kv_heads, s.head_dim);
  }
  const Tensor q = rand_f32({n_tok, n_heads, s.head_dim}, rng, 2.f);
  CaseFn<AttentionArgs> call = [&](const Variant<AttentionArgs>& v, const DeviceAdapter& a, const Context& ctx,
                                   std::string* why, double* us) -> std::optional<Tensor> {
    KvLayer dc = put_cache(a, cache);
    Tensor dq = put(a, q, Role::Activation),
           dout = put(a, poisoned(DType::F32, {n_tok, n_heads, s.head_dim}), Role::Activation);
    AttentionBatch b = batch;
    b.block_tables = put(a, tables, Role::Index);
    b.seq_info = put(a, info, Role::Index);
    AttentionArgs args{dq, dc, b, dout};
    if (!v.supports(args, why)) return std::nullopt;
    run_maybe_timed([&] { v.run(args, ctx); }, a, us);
    return a.download(dout);
  };
  std::string desc = fmt::format("{} h{}/{} d{} bs{}{} seqs", t.name(), n_heads, s.n_kv_heads, s.head_dim, s.block_size,
                                 window > 0 ? fmt::format(" window {}", window) : "");
  double flops = 0;
  for (const SeqSpec& sp : specs) {
    desc += fmt::format(" {}/{}", sp.q_len, sp.kv_len);
    for (int32_t i = 0; i < sp.q_len; ++i) flops += 4.0 * n_heads * s.head_dim * (sp.kv_len - sp.q_len + i + 1);
  }
  // Device variants also round the probabilities to bf16 before P.V (tests/ops/cuda_ops_test.cpp bounds
  // that at 5e-4 on exactly representable inputs).
  const BoundFn bound = [](const std::string& v) { return v.starts_with("cpu.") ? kFloatBound : 5e-4; };
  check_case(registries().attention, desc, bound, call, kv_bytes + 2.0 * q.nbytes(), flops,
             [&](const std::string& v) { return cuda_attention_decline(v, t, s.head_dim, decode_only, window); });
}

TEST_F(OpsHarness, Attention) {
  uint32_t seed = 700;
  const std::vector<std::vector<SeqSpec>> batches = {
      {{1, 1}},                     // first token
      {{1, 37}, {1, 5}, {1, 100}},  // decode batch, different lengths
      {{23, 23}},                   // prefill
      {{5, 50}, {1, 17}, {9, 9}},   // chunked prefill next to decode and prefill
      {{1, 1500}},                  // long decode: split into kv chunks and merged
      {{3, 700}, {1, 900}},         // split rows with several query tokens
  };
  for (DType t : {DType::F32, DType::F16})
    for (int64_t group : {1, 3, 4, 8})
      for (int64_t d : {64, 128})
        for (int64_t bs : {16, 32})
          for (const auto& specs : batches) {
            const int64_t n_kv = group == 8 ? 1 : 2;
            check_attention(t, n_kv * group, {n_kv, d, bs, 0}, specs, seed++);
          }
  // SmolLM2's geometry: 9 heads over 3 kv heads of 64, bf16 pages.
  check_attention(DType::BF16, 9, {3, 64, 16, 0}, {{1, 300}, {4, 40}}, seed++);
  // Head sizes without a tiled CUDA kernel (tiny test models, Phi-like 80 and 96, Gemma-like 256).
  for (int64_t d : {16, 32, 80, 96, 256})
    for (const auto& specs : {batches[3], batches[5]}) check_attention(DType::BF16, 8, {2, d, 16, 0}, specs, seed++);
  // Sliding windows (Gemma 3): shorter and longer than the contexts, across kv chunk boundaries (the CPU's
  // 256-position chunks), one less than the context (a single masked key), and Gemma 3's geometry.
  for (int32_t window : {1, 7, 256, 299, 512})
    for (const auto& specs : {batches[1], batches[3], batches[5], std::vector<SeqSpec>{{1, 300}, {40, 300}}})
      check_attention(DType::F32, 4, {2, 64, 16, 0}, specs, seed++, window);
  check_attention(DType::BF16, 4, {1, 256, 16, 0}, {{1, 700}, {30, 530}, {1, 20}}, seed++, 512);
  // Quantized pages (--kv-type fp8, int8, int4 and llama.cpp's q8_0, q5_1): decoded in registers on CUDA, a
  // tile at a time on the CPU; every variant against the reference on the same pages.
  for (const PageType& t : quantized_pages())
    for (const auto& specs : {batches[1], batches[3], batches[4]}) {
      check_attention(t, 8, {2, 128, 16, 0}, specs, seed++);
      check_attention(t, 9, {3, 64, 16, 0}, specs, seed++);
    }
  check_attention(PageType{DType::U8, 64}, 4, {1, 256, 16, 0}, {{1, 700}, {30, 530}}, seed++, 512);
}

// ---- the classifier's ops (ops/classifier_ops.h) ----------------------------------------------------
// Only cpu.ref implements them so far: these cases are what their CUDA kernels will be checked on.

class ClassifierOpsHarness : public ::testing::Test {
 protected:
  void SetUp() override { stats().clear(); }
  void TearDown() override { check_coverage(/*require_cpu_run=*/false); }
};

// One case of an op whose inputs travel as activations (or `roles`) and whose output starts as `out`
// (initialised, so ops that leave parts of it alone are compared whole).
template <typename Args>
void check_classifier_case(const Registry<Args>& reg, const std::string& name,
                           const std::vector<std::pair<Tensor, Role>>& inputs, const Tensor& out,
                           const std::function<Args(std::vector<Tensor>&, Tensor&)>& make) {
  CaseFn<Args> call = [&](const Variant<Args>& v, const DeviceAdapter& a, const Context& ctx, std::string* why,
                          double* us) -> std::optional<Tensor> {
    std::vector<Tensor> in;
    for (const auto& [t, role] : inputs) in.push_back(put(a, t, role));
    Tensor dout = put(a, out, Role::Activation);
    const Args args = make(in, dout);
    if (!v.supports(args, why)) return std::nullopt;
    run_maybe_timed([&] { v.run(args, ctx); }, a, us);  // no case runs in place: repeating it is harmless
    return a.download(dout);
  };
  check_case(reg, name, kFloatBound, call);
}

TEST_F(ClassifierOpsHarness, LstmAndMeanRows) {
  uint32_t seed = 900;
  for (int64_t H : {1, 4, 32})
    for (bool reverse : {false, true}) {
      std::mt19937 rng(seed++);
      const std::vector<EncoderSeq> seqs = {{0, 3}, {3, 1}, {5, 7}};  // row 4 belongs to no sequence
      const int64_t T = 12, D = 2 * H + 1;
      const Tensor gates = rand_f32({T, 4 * H}, rng, 2.f), w_hh = rand_f32({4 * H, H}, rng, 0.5f);
      const Tensor out = rand_f32({T, D}, rng);
      check_classifier_case<LstmArgs>(
          classifier_registries().lstm, dims({T, H}) + (reverse ? " reverse" : ""),
          {{gates, Role::Activation}, {w_hh, Role::Param}}, out,
          [&](std::vector<Tensor>& in, Tensor& o) { return LstmArgs{in[0], in[1], seqs, reverse, H, o}; });
      const Tensor x = rand_f32({T, D}, rng);
      check_classifier_case<MeanRowsArgs>(classifier_registries().mean_rows, dims({T, D}), {{x, Role::Activation}},
                                          rand_f32({3, D}, rng), [&](std::vector<Tensor>& in, Tensor& o) {
                                            return MeanRowsArgs{in[0], seqs, o};
                                          });
    }
}

TEST_F(ClassifierOpsHarness, Conv2d) {
  struct Case {
    int64_t n, c, h, w, o, k;
    Conv2dParams p;
    bool bias;
  };
  uint32_t seed = 920;
  for (const Case& k : {Case{2, 3, 9, 7, 4, 3, {1, 1, true}, true}, Case{1, 2, 8, 8, 1, 7, {1, 3, false}, false},
                        Case{1, 96, 8, 8, 64, 3, {1, 1, true}, true}, Case{1, 5, 6, 6, 3, 2, {2, 0, false}, true}}) {
    std::mt19937 rng(seed++);
    const int64_t oh = (k.h + 2 * k.p.pad - k.k) / k.p.stride + 1, ow = (k.w + 2 * k.p.pad - k.k) / k.p.stride + 1;
    const Tensor x = rand_f32({k.n, k.c, k.h, k.w}, rng), w = rand_f32({k.o, k.c, k.k, k.k}, rng, 0.3f),
                 b = rand_f32({k.o}, rng);
    check_classifier_case<Conv2dArgs>(
        classifier_registries().conv2d,
        dims({k.n, k.c, k.h, k.w, k.o, k.k}) + fmt::format(" s{} p{}", k.p.stride, k.p.pad),
        {{x, Role::Activation}, {w, Role::Param}, {b, Role::Param}}, poisoned(DType::F32, {k.n, k.o, oh, ow}),
        [&](std::vector<Tensor>& in, Tensor& o) {
          return Conv2dArgs{in[0], in[1], k.bias ? &in[2] : nullptr, k.p, o};
        });
  }
}

TEST_F(ClassifierOpsHarness, Pooling) {
  uint32_t seed = 940;
  for (auto [n, c, h, w, k] : {std::array<int64_t, 5>{2, 3, 8, 8, 2}, {1, 2, 7, 5, 2}, {1, 1, 9, 9, 3}}) {
    std::mt19937 rng(seed++);
    const Tensor x = rand_f32({n, c, h, w}, rng);
    const int kernel = static_cast<int>(k);
    check_classifier_case<MaxPool2dArgs>(classifier_registries().max_pool2d, dims({n, c, h, w, k}),
                                         {{x, Role::Activation}}, poisoned(DType::F32, {n, c, h / k, w / k}),
                                         [&](std::vector<Tensor>& in, Tensor& o) {
                                           return MaxPool2dArgs{in[0], kernel, o};
                                         });
    const auto unary = [](std::vector<Tensor>& in, Tensor& o) { return UnaryArgs{in[0], o}; };
    check_classifier_case<UnaryArgs>(classifier_registries().global_pool, dims({n, c, h, w}), {{x, Role::Activation}},
                                     poisoned(DType::F32, {2, n, c}), unary);
    check_classifier_case<UnaryArgs>(classifier_registries().channel_pool, dims({n, c, h, w}), {{x, Role::Activation}},
                                     poisoned(DType::F32, {n, 2, h, w}), unary);
  }
}

TEST_F(ClassifierOpsHarness, ElementwiseBroadcastAndTiling) {
  uint32_t seed = 960;
  const auto unary = [](std::vector<Tensor>& in, Tensor& o) { return UnaryArgs{in[0], o}; };
  const auto binary = [](std::vector<Tensor>& in, Tensor& o) { return BinaryArgs{in[0], in[1], o}; };
  for (int64_t n : {1, 7, 1000}) {
    std::mt19937 rng(seed++);
    const Tensor x = rand_f32({n}, rng, 4.f);
    check_classifier_case<UnaryArgs>(classifier_registries().relu, dims({n}), {{x, Role::Activation}},
                                     poisoned(DType::F32, {n}), unary);
    check_classifier_case<UnaryArgs>(classifier_registries().sigmoid, dims({n}), {{x, Role::Activation}},
                                     poisoned(DType::F32, {n}), unary);
  }
  for (auto [n, c, h, w] : {std::array<int64_t, 4>{1, 64, 8, 8}, {3, 2, 5, 4}}) {
    std::mt19937 rng(seed++);
    const Tensor x = rand_f32({n, c, h, w}, rng);
    for (const std::vector<int64_t>& s : {std::vector<int64_t>{n, c, 1, 1}, {n, 1, h, w}, {1, c, h, 1}})
      check_classifier_case<BinaryArgs>(
          classifier_registries().mul_broadcast, dims({n, c, h, w}) + " by " + dims({s[0], s[1], s[2], s[3]}),
          {{x, Role::Activation}, {rand_f32(s, rng), Role::Activation}}, poisoned(DType::F32, {n, c, h, w}), binary);
    check_classifier_case<BinaryArgs>(classifier_registries().concat_tiled, dims({n, c, h, w}),
                                      {{x, Role::Activation}, {rand_f32({n, 5}, rng), Role::Activation}},
                                      poisoned(DType::F32, {n, c + 5, h, w}), binary);
  }
}

// ---- MoE (ops/moe_ops.h) ------------------------------------------------------------------------------
class MoeOpsHarness : public ::testing::Test {
 protected:
  void SetUp() override { stats().clear(); }
  void TearDown() override { check_coverage(/*require_cpu_run=*/false); }
};

// The router against values worked out by hand: softmax over all experts, the top k by weight with ties to
// the lower id, renormalised or not.
TEST(MoeRouter, TopKWithTiesAndNormalisation) {
  const Context ctx = context_for(cpu_adapter());
  Tensor logits = Tensor::empty_host(DType::F32, {2, 4});
  const float l[8] = {0.f, 1.f, 1.f, -1.f, 2.f, 0.f, 0.f, 0.f};  // row 0: experts 1 and 2 tie
  std::memcpy(logits.data, l, sizeof l);
  for (bool normalize : {false, true}) {
    Tensor ids = Tensor::empty_host(DType::I32, {2, 2}), w = Tensor::empty_host(DType::F32, {2, 2});
    moe_router(ctx, logits, MoeRouting{2, normalize}, ids, w);
    const int32_t* id = ids.ptr<int32_t>();
    EXPECT_EQ(id[0], 1);
    EXPECT_EQ(id[1], 2);
    EXPECT_EQ(id[2], 0);
    EXPECT_EQ(id[3], 1);  // experts 1..3 tie: the lowest
    const double s0 = 1 + 2 * std::exp(1.0) + std::exp(-1.0), s1 = std::exp(2.0) + 3;
    const double w0 = normalize ? 0.5 : std::exp(1.0) / s0;
    const double w2 = normalize ? std::exp(2.0) / (std::exp(2.0) + 1) : std::exp(2.0) / s1;
    const double w3 = normalize ? 1 / (std::exp(2.0) + 1) : 1 / s1;
    EXPECT_NEAR(w.ptr<float>()[0], w0, 1e-6);
    EXPECT_NEAR(w.ptr<float>()[1], w0, 1e-6);
    EXPECT_NEAR(w.ptr<float>()[2], w2, 1e-6);
    EXPECT_NEAR(w.ptr<float>()[3], w3, 1e-6);
  }
  Tensor ids = Tensor::empty_host(DType::I32, {2, 5}), w = Tensor::empty_host(DType::F32, {2, 5});
  EXPECT_THROW(moe_router(ctx, logits, MoeRouting{5, true}, ids, w), Error);  // k > experts
}

// The grouped FFN (tokens permuted by expert through ops::matmul) against the per-token reference, with
// experts that get no token, one, or many, and in quantized weights as GGUF files store experts.
TEST_F(MoeOpsHarness, MoeFfn) {
  struct Case {
    int64_t T, D, F, E, k;
    DType wtype;
  };
  uint32_t seed = 1700;
  for (const Case& c :
       {Case{1, 32, 16, 4, 2, DType::F32}, Case{7, 64, 32, 8, 2, DType::F32}, Case{33, 64, 48, 8, 3, DType::F32},
        Case{16, 64, 64, 4, 1, DType::F16}, Case{24, 64, 64, 8, 2, DType::Q8_0}}) {
    std::mt19937 rng(seed++);
    const Tensor x = rand_f32({c.T, c.D}, rng);
    MoeExperts experts;
    for (int64_t e = 0; e < c.E; ++e) {
      experts.gate.emplace_back(testing::random_weights(c.wtype, {c.F, c.D}, rng, 0.2f));
      experts.up.emplace_back(testing::random_weights(c.wtype, {c.F, c.D}, rng, 0.2f));
      experts.down.emplace_back(testing::random_weights(c.wtype, {c.D, c.F}, rng, 0.2f));
    }
    // Routing from random logits, as the model does: distinct experts per token, weights summing to 1.
    const Tensor logits = rand_f32({c.T, c.E}, rng, 2.f);
    Tensor ids = Tensor::empty_host(DType::I32, {c.T, c.k}), weights = Tensor::empty_host(DType::F32, {c.T, c.k});
    moe_router(context_for(cpu_adapter()), logits, MoeRouting{static_cast<int>(c.k), true}, ids, weights);
    CaseFn<MoeFfnArgs> call = [&](const Variant<MoeFfnArgs>& v, const DeviceAdapter& a, const Context& ctx,
                                  std::string* why, double* us) -> std::optional<Tensor> {
      Tensor dx = put(a, x, Role::Activation), dw = put(a, weights, Role::Activation),
             dy = put(a, poisoned(DType::F32, {c.T, c.D}), Role::Activation);
      const MoeFfnArgs args{dx, experts, ids, dw, dy};
      if (!v.supports(args, why)) return std::nullopt;
      run_maybe_timed([&] { v.run(args, ctx); }, a, us);
      return a.download(dy);
    };
    // Quantized experts: the matmul kernels round activations to 8 bits per block (see kQuantBound).
    const double bound = c.wtype == DType::Q8_0 ? kQuantBound : kFloatBound;
    check_case(moe_registries().moe_ffn, dims({c.T, c.D, c.F, c.E, c.k}) + " " + std::string(dtype_info(c.wtype).name),
               bound, call);
  }
}

}  // namespace
}  // namespace kestrel::ops_harness
