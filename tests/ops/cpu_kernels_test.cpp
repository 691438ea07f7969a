// The fast CPU backend beyond numerical agreement (which the ops harness checks): that the dispatcher
// actually picks a fast variant for every model dtype, and that bad arguments raise kestrel::Error.
#include <gtest/gtest.h>

#include <cmath>

#include "backends/cpu/kernels.h"
#include "core/dequant.h"
#include "core/error.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace kestrel {
namespace {

using namespace ops;

TEST(CpuKernels, FastVariantChosenForEveryWeightDtype) {
  Context ctx;
  for (DType t :
       {DType::F32, DType::F16, DType::BF16, DType::Q4_0, DType::Q4_1, DType::Q8_0, DType::Q4_K, DType::Q6_K}) {
    Tensor x = Tensor::empty_host(DType::F32, {2, 256}), w = Tensor::empty_host(t, {8, 256});
    Tensor y = Tensor::empty_host(DType::F32, {2, 8});
    const auto& v = registries().matmul.select({x, w, y, nullptr}, ctx);
    EXPECT_NE(v.name, "cpu.ref") << dtype_name(t);
  }
}

TEST(CpuKernels, WidestAvailableTableWins) {
  using namespace backends::cpu;
  const char* best = avx512vnni_kernels().available() ? "cpu.avx512vnni"
                     : avx2_kernels().available()     ? "cpu.avx2"
                                                      : "cpu.generic";
  Tensor x = Tensor::empty_host(DType::F32, {1, 64}), w = Tensor::empty_host(DType::Q8_0, {4, 64});
  Tensor y = Tensor::empty_host(DType::F32, {1, 4});
  EXPECT_EQ(registries().matmul.select({x, w, y, nullptr}, Context{}).name, best);
}

TEST(CpuKernels, ActivationQuantizationMatchesDefinition) {
  using namespace backends::cpu;
  float x[64];
  for (int i = 0; i < 64; ++i) x[i] = std::sin(i * 0.7f) * (i % 5 + 1);
  x[40] = 0;  // keep one block's extremes irregular
  for (const Kernels* k : {&generic_kernels(), &avx2_kernels(), &avx512vnni_kernels()}) {
    if (!k->available()) continue;
    BlockQ8x32 q[2];
    k->quantize_q8x32(x, q, 64);
    for (int b = 0; b < 2; ++b) {
      float amax = 0;
      for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[32 * b + i]));
      EXPECT_FLOAT_EQ(q[b].d, amax / 127.f) << k->name;
      int sum[2] = {0, 0};
      for (int i = 0; i < 32; ++i) {
        EXPECT_NEAR(q[b].qs[i] * q[b].d, x[32 * b + i], q[b].d * 0.5001f) << k->name << " element " << i;
        sum[i / 16] += q[b].qs[i];
      }
      EXPECT_EQ(q[b].sum[0], sum[0]);
      EXPECT_EQ(q[b].sum[1], sum[1]);
      EXPECT_FLOAT_EQ(q[b].s, q[b].d * (sum[0] + sum[1]));
    }
  }
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

}  // namespace
}  // namespace kestrel
