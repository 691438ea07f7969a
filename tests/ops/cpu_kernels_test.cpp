// The fast CPU backend beyond numerical agreement (which the ops harness checks): that the dispatcher
// actually picks a fast variant for every model dtype, that bad arguments raise kestrel::Error, and
// that the default matmul keeps the default model's top-1 predictions of exact f32 math.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../common/random_weights.h"
#include "../common/sanitizers.h"
#include "../common/skip_or_fail.h"
#include "../model/test_paths.h"
#include "backends/cpu/kernels.h"
#include "core/dequant.h"
#include "core/error.h"
#include "engine/sampler.h"
#include "engine/session.h"
#include "model/model.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace kestrel {
namespace {

using namespace ops;

TEST(CpuKernels, FastVariantChosenForEveryWeightDtype) {
  Context ctx;
  for (DType t : testing::kWeightTypes) {
    Tensor x = Tensor::empty_host(DType::F32, {2, 256}), w = Tensor::empty_host(t, {8, 256});
    Tensor y = Tensor::empty_host(DType::F32, {2, 8});
    const auto& v = registries().matmul.select({x, w, y, nullptr}, ctx);
    EXPECT_NE(v.name, "cpu.ref") << dtype_name(t);
  }
}

TEST(CpuKernels, WidestAvailableTableWins) {
  using namespace backends::cpu;
  // Within a table the 16-bit-activation matmul wins over the 8-bit one.
  const char* best = avx512vnni_kernels().available() ? "cpu.avx512vnni.a16"
                     : avx2_kernels().available()     ? "cpu.avx2.a16"
                                                      : "cpu.generic.a16";
  Tensor x = Tensor::empty_host(DType::F32, {1, 64}), w = Tensor::empty_host(DType::Q8_0, {4, 64});
  Tensor y = Tensor::empty_host(DType::F32, {1, 4});
  EXPECT_EQ(registries().matmul.select({x, w, y, nullptr}, Context{}).name, best);
}

// Both activation formats: x ~= d * qs with d = absmax / qmax, round to nearest, and the sums.
template <class XBlock>
void check_activation_quantization(void (*backends::cpu::Kernels::*quantize)(const float*, XBlock*, int64_t),
                                   float qmax) {
  using namespace backends::cpu;
  float x[64];
  for (int i = 0; i < 64; ++i) x[i] = std::sin(i * 0.7f) * (i % 5 + 1);
  x[40] = 0;  // keep one block's extremes irregular
  for (const Kernels* k : {&generic_kernels(), &avx2_kernels(), &avx512vnni_kernels()}) {
    if (!k->available()) continue;
    XBlock q[2];
    (k->*quantize)(x, q, 64);
    for (int b = 0; b < 2; ++b) {
      float amax = 0;
      for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[32 * b + i]));
      EXPECT_FLOAT_EQ(q[b].d, amax / qmax) << k->name;
      int sum[2] = {0, 0};
      for (int i = 0; i < 32; ++i) {
        EXPECT_NEAR(q[b].qs[i] * q[b].d, x[32 * b + i], q[b].d * 0.5001f) << k->name << " element " << i;
        sum[i / 16] += q[b].qs[i];
      }
      if constexpr (requires { q[b].sum; }) {
        EXPECT_EQ(q[b].sum[0], sum[0]);
        EXPECT_EQ(q[b].sum[1], sum[1]);
      }
      EXPECT_FLOAT_EQ(q[b].s, q[b].d * (sum[0] + sum[1]));
    }
  }
}

TEST(CpuKernels, ActivationQuantizationMatchesDefinition) {
  using namespace backends::cpu;
  check_activation_quantization<BlockQ8x32>(&Kernels::quantize_q8x32, 127.f);
  check_activation_quantization<BlockQ16x32>(&Kernels::quantize_q16x32, 32767.f);
}

TEST(CpuKernels, BadArgumentsThrow) {
  Context ctx;
  // Token id outside the vocabulary.
  Tensor table = Tensor::empty_host(DType::Q8_0, {10, 32}), ids = Tensor::empty_host(DType::I32, {2});
  Tensor out = Tensor::empty_host(DType::F32, {2, 32});
  ids.ptr<int32_t>()[1] = 10;
  EXPECT_THROW(embed(ctx, table, ids, out), Error);
  // KV slot outside the cache.
  KvLayer cache{Tensor::empty_host(DType::F16, {2, 16, 1, 64}), Tensor::empty_host(DType::F16, {2, 16, 1, 64})};
  Tensor k = Tensor::empty_host(DType::F32, {1, 1, 64}), v = Tensor::empty_host(DType::F32, {1, 1, 64});
  Tensor slots = Tensor::empty_host(DType::I32, {1});
  slots.ptr<int32_t>()[0] = 32;
  EXPECT_THROW(kv_write(ctx, k, v, slots, cache), Error);
  // Block table entry outside the cache, and a sequence longer than the query rows.
  Tensor q = Tensor::empty_host(DType::F32, {1, 2, 64}), o = Tensor::empty_host(DType::F32, {1, 2, 64});
  int32_t table_ids[] = {5};
  AttentionBatch batch{{{0, 1, 3, table_ids}}, 0.125f};
  EXPECT_THROW(attention(ctx, q, cache, batch, o), Error);
  table_ids[0] = 1;
  batch.seqs[0].q_len = 2;
  EXPECT_THROW(attention(ctx, q, cache, batch, o), Error);
  // Matmul shape mismatch reaching a variant directly (as the harness does).
  Tensor x = Tensor::empty_host(DType::F32, {1, 64}), w = Tensor::empty_host(DType::Q4_1, {4, 96});
  Tensor y = Tensor::empty_host(DType::F32, {1, 4});
  for (const auto& var : registries().matmul.variants())
    if (var.name != "cpu.ref" && var.device == Device::Cpu) {
      std::string why;
      MatmulArgs args{x, w, y, nullptr};
      if (var.supports(args, &why)) EXPECT_THROW(var.run(args, ctx), Error) << var.name;
    }
}

// SmolLM2-135M has activation outliers: 8-bit activation blocks (the int8 variants, like llama.cpp's
// Q8_1) flip its top-1 token on ~5% of positions against exact math, the 16-bit ones must not. The
// oracle is the same model with the cpu.ref matmul (f32 activations, weights dequantized exactly).
TEST(CpuKernels, DefaultMatmulKeepsTop1OfExactMathOnDefaultModel) {
  const std::string path = test::default_model();
  if (path.empty()) KS_SKIP_OR_FAIL("default model not cached; run scripts/setup.sh");
  std::ifstream in(test::fixture("smollm2/top1.json"));
  ASSERT_TRUE(in.good());
  const nlohmann::json prompts = nlohmann::json::parse(in);
  auto model = load_model(path);
  const int64_t V = model->config().vocab;
  Context exact;
  exact.forced = {{"matmul", "cpu.ref"}};
  int64_t positions = 0, same = 0;
  float max_error = 0, worst_gap = 0;  // largest |fast - exact| logit; largest exact gap at a differing top-1
  for (size_t k = 0; k < prompts["cases"].size(); ++k) {
    if (!test::runs_case(k)) continue;
    const auto ids = prompts["cases"][k]["token_ids"].get<std::vector<int32_t>>();
    Session fast(*model->decoder, {}, SessionOptions{.n_ctx = 1024});
    Session ref(*model->decoder, exact, SessionOptions{.n_ctx = 1024});
    const Tensor got = fast.feed(ids, /*all_logits=*/true), want = ref.feed(ids, /*all_logits=*/true);
    for (size_t i = 0; i < ids.size(); ++i, ++positions) {
      const std::span<const float> g(got.ptr<float>() + i * V, V), w(want.ptr<float>() + i * V, V);
      for (int64_t j = 0; j < V; ++j) max_error = std::max(max_error, std::fabs(g[j] - w[j]));
      const int32_t gi = argmax(g), wi = argmax(w);
      same += gi == wi;
      worst_gap = std::max(worst_gap, w[wi] - w[gi]);
    }
  }
  Tensor x = Tensor::empty_host(DType::F32, {1, 576}), w = Tensor::empty_host(DType::Q4_1, {8, 576});
  Tensor y = Tensor::empty_host(DType::F32, {1, 8});
  std::printf("default matmul (%s) top-1 vs cpu.ref matmul: %lld / %lld positions, max logit error %.4f\n",
              registries().matmul.select({x, w, y, nullptr}, Context{}).name.c_str(), static_cast<long long>(same),
              static_cast<long long>(positions), max_error);
  // 16-bit activations stay within 0.013 of exact math on every logit (measured, AVX-512 VNNI); 8-bit ones
  // move logits by 0.1-0.4 (ARCHITECTURE.md). A top-1 may then differ only where exact math's own top two
  // are within twice the bound. (The ratio of agreeing positions this asserted before, 0.99, let four
  // flips at any margin pass.)
  EXPECT_LT(max_error, 0.04f);
  EXPECT_LE(worst_gap, 0.08f);
}

}  // namespace
}  // namespace kestrel
