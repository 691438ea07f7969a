// CUDA variants against the CPU reference in the precision the GPU path really runs: bf16 activations,
// weights and KV pages. Inputs are drawn fresh per case and rounded to bf16 on the host, so the
// reference sees exactly the device's inputs and the NMSE measures only the kernels' own rounding (bf16
// outputs: ~1e-6; P rounded to bf16 inside attention: ~1e-5). Outputs are NaN-poisoned before each run,
// so an unwritten element fails. Without a GPU every case is skipped with a message.
#ifdef KESTREL_HAVE_CUDA

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "../common/random_weights.h"
#include "backends/backends.h"
#include "backends/cuda/allocator.h"
#include "backends/cuda/device_tensor.h"
#include "core/dequant.h"
#include "core/error.h"
#include "core/half.h"
#include "core/quant_groups.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace kestrel::backends::cuda {
namespace {

using namespace ops;

#define SKIP_WITHOUT_GPU() \
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device: CUDA cases skipped"

constexpr double kBf16Bound = 1e-4;       // bf16-rounded outputs of exact-input computations
constexpr double kAttentionBound = 5e-4;  // plus P (probabilities) rounded to bf16 before P.V

Tensor rand_host(std::vector<int64_t> shape, std::mt19937& rng, float scale = 1.f) {
  Tensor t = Tensor::empty_host(DType::F32, std::move(shape));
  std::normal_distribution<float> n(0.f, scale);
  for (int64_t i = 0; i < t.numel(); ++i) t.ptr<float>()[i] = bf16_to_f32(f32_to_bf16(n(rng)));
  return t;
}

Tensor ints_host(const std::vector<int32_t>& v) {
  Tensor t = Tensor::empty_host(DType::I32, {static_cast<int64_t>(v.size())});
  std::copy(v.begin(), v.end(), t.ptr<int32_t>());
  return t;
}

Tensor poisoned_device(DType dtype, std::vector<int64_t> shape) {
  Tensor t = empty_device(dtype, std::move(shape));
  if (t.nbytes()) EXPECT_EQ(cudaMemset(t.data, 0xff, t.nbytes()), cudaSuccess);  // NaN in f32 and bf16
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // the lane's stream does not wait for the default one
  return t;
}

double nmse(const Tensor& got, const Tensor& want) {
  EXPECT_EQ(got.numel(), want.numel());
  double num = 0, den = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double g = got.ptr<float>()[i], w = want.ptr<float>()[i];
    if (!std::isfinite(g)) return INFINITY;
    num += (g - w) * (g - w);
    den += w * w;
  }
  return den > 0 ? num / den : num;
}

Context cuda_ctx() {
  return backends::make_context(Device::Cuda);
}

// The row-error words the lane's kernels raised for the first `rows` token rows (and clears them).
unsigned row_errors(int rows = 64) {
  unsigned any = 0;
  for (unsigned w : cuda_ctx().lane().take_row_errors(rows)) any |= w;
  return any;
}
Context cpu_ctx() {
  return Context{};
}

Tensor result(const Tensor& dev) {
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return to_host(dev, DType::F32);
}

TEST(CudaOps, RegistersVariantsAndMemoryHooks) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(1);
  const Tensor h = rand_host({3, 5}, rng);
  const Tensor d = ops::upload(cuda_ctx(), h);
  EXPECT_EQ(d.device, Device::Cuda);
  Tensor back = Tensor::empty_host(DType::F32, {3, 5});
  ops::download(cuda_ctx(), d, back);
  EXPECT_EQ(nmse(back, h), 0.0);
}

TEST(CudaOps, Embed) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(11);
  for (DType out_t : {DType::BF16, DType::F32}) {
    const Tensor table = rand_host({1000, 200}, rng);
    std::vector<int32_t> ids(37);
    for (auto& id : ids) id = static_cast<int32_t>(rng() % 1000);
    Tensor want = Tensor::empty_host(DType::F32, {37, 200});
    ops::embed(cpu_ctx(), table, ints_host(ids), want);
    Tensor out = poisoned_device(out_t, {37, 200});
    ops::embed(cuda_ctx(), to_device(table, DType::BF16), to_device(ints_host(ids), DType::I32), out);
    EXPECT_LE(nmse(result(out), want), kBf16Bound);
  }
}

TEST(CudaOps, EmbedBadIdIsReported) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(12);
  const Tensor table = to_device(rand_host({10, 64}, rng), DType::BF16);
  Tensor out = poisoned_device(DType::BF16, {2, 64});
  ops::embed(cuda_ctx(), table, to_device(ints_host({3, 10}), DType::I32), out);
  const std::vector<unsigned> rows = cuda_ctx().lane().take_row_errors(2);
  EXPECT_EQ(rows[0], 0u);
  EXPECT_EQ(rows[1], unsigned{kRowErrTokenId});  // row 1 holds the bad id
  EXPECT_EQ(row_errors(), 0u);                   // words cleared
}

TEST(CudaOps, Rmsnorm) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(13);
  for (DType t : {DType::BF16, DType::F32})
    for (int64_t d : {576, 4096, 100}) {
      const Tensor x = rand_host({7, d}, rng, 3.f), w = rand_host({d}, rng);
      Tensor want = Tensor::empty_host(DType::F32, {7, d});
      ops::rmsnorm(cpu_ctx(), x, w, 1e-5f, want);
      Tensor y = poisoned_device(t, {7, d});
      ops::rmsnorm(cuda_ctx(), to_device(x, t), to_device(w, DType::F32), 1e-5f, y);
      EXPECT_LE(nmse(result(y), want), kBf16Bound) << dtype_name(t) << " d" << d;
    }
}

TEST(CudaOps, AddAndSiluMul) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(14);
  for (DType t : {DType::BF16, DType::F32})
    for (int64_t n : {int64_t{4096}, int64_t{100003}}) {
      const Tensor a = rand_host({n}, rng, 2.f), b = rand_host({n}, rng);
      const Tensor da = to_device(a, t), db = to_device(b, t);
      Tensor want = Tensor::empty_host(DType::F32, {n});
      ops::add(cpu_ctx(), a, b, want);
      Tensor y = poisoned_device(t, {n});
      ops::add(cuda_ctx(), da, db, y);
      EXPECT_LE(nmse(result(y), want), kBf16Bound) << "add " << dtype_name(t) << " n" << n;
      ops::silu_mul(cpu_ctx(), a, b, want);
      y = poisoned_device(t, {n});
      ops::silu_mul(cuda_ctx(), da, db, y);
      EXPECT_LE(nmse(result(y), want), kBf16Bound) << "silu_mul " << dtype_name(t) << " n" << n;
    }
}

TEST(CudaOps, Rope) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(15);
  for (auto style : {RopeParams::Style::Adjacent, RopeParams::Style::HalfSplit})
    for (int64_t d : {64, 128})
      for (bool llama3 : {false, true}) {
        RopeParams p;
        p.style = style;
        p.rot_dim = llama3 ? static_cast<int>(d) : static_cast<int>(d / 2);  // partial rotation too
        p.theta = llama3 ? 500000.f : 10000.f;
        if (llama3) p.llama3_factor = 8.f;
        const Tensor x = rand_host({9, 4, d}, rng);
        std::vector<int32_t> pos(9);
        for (auto& v : pos) v = static_cast<int32_t>(rng() % 100000);
        Tensor want = Tensor::empty_host(DType::F32, x.shape);
        std::copy(x.ptr<float>(), x.ptr<float>() + x.numel(), want.ptr<float>());
        ops::rope(cpu_ctx(), want, ints_host(pos), p);
        Tensor dx = to_device(x, DType::BF16);
        ops::rope(cuda_ctx(), dx, to_device(ints_host(pos), DType::I32), p);
        EXPECT_LE(nmse(result(dx), want), kBf16Bound) << "d" << d << " llama3 " << llama3;
      }
}

TEST(CudaOps, KvWrite) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(16);
  const int64_t blocks = 8, bs = 16, hkv = 2, d = 128, T = 40;
  std::vector<int32_t> slots(blocks * bs);
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), rng);
  slots.resize(T);
  const Tensor k = rand_host({T, hkv, d}, rng), v = rand_host({T, hkv, d}, rng);
  KvLayer want{rand_host({blocks, bs, hkv, d}, rng), rand_host({blocks, bs, hkv, d}, rng)};
  KvLayer dev{to_device(want.k, DType::BF16), to_device(want.v, DType::BF16)};
  ops::kv_write(cpu_ctx(), k, v, ints_host(slots), want);
  ops::kv_write(cuda_ctx(), to_device(k, DType::BF16), to_device(v, DType::BF16),
                to_device(ints_host(slots), DType::I32), dev);
  EXPECT_EQ(nmse(result(dev.k), want.k), 0.0);
  EXPECT_EQ(nmse(result(dev.v), want.v), 0.0);
  ops::kv_write(cuda_ctx(), to_device(k.slice_rows(0, 1), DType::BF16), to_device(v.slice_rows(0, 1), DType::BF16),
                to_device(ints_host({int32_t(blocks * bs)}), DType::I32), dev);
  EXPECT_EQ(row_errors(), unsigned{kRowErrKvSlot});
}

TEST(CudaOps, AddRmsnorm) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(21);
  for (DType t : {DType::BF16, DType::F32})
    for (int64_t d : {4096, 100})
      for (bool alias_r : {false, true}) {
        const Tensor x = rand_host({7, d}, rng, 2.f), r = rand_host({7, d}, rng, 2.f), w = rand_host({d}, rng);
        Tensor want_x = Tensor::empty_host(DType::F32, {7, d}), want_y = Tensor::empty_host(DType::F32, {7, d});
        std::copy(x.ptr<float>(), x.ptr<float>() + x.numel(), want_x.ptr<float>());
        ops::add_rmsnorm(cpu_ctx(), want_x, r, w, 1e-5f, want_y);
        Tensor dx = to_device(x, t), dr = to_device(r, t), dy = poisoned_device(t, {7, d});
        Tensor& y = alias_r ? dr : dy;
        ops::add_rmsnorm(cuda_ctx(), dx, dr, to_device(w, DType::F32), 1e-5f, y);
        EXPECT_LE(nmse(result(dx), want_x), kBf16Bound) << dtype_name(t) << " d" << d;
        EXPECT_LE(nmse(result(y), want_y), kBf16Bound) << dtype_name(t) << " d" << d << " alias " << alias_r;
      }
}

TEST(CudaOps, Swiglu) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(22);
  for (DType t : {DType::BF16, DType::F32})
    for (int64_t f : {14336, 100, 7}) {
      const Tensor gu = rand_host({5, 2 * f}, rng, 3.f);
      Tensor want = Tensor::empty_host(DType::F32, {5, f});
      ops::swiglu(cpu_ctx(), gu, want);
      Tensor y = poisoned_device(t, {5, f});
      ops::swiglu(cuda_ctx(), to_device(gu, t), y);
      EXPECT_LE(nmse(result(y), want), kBf16Bound) << dtype_name(t) << " F" << f;
    }
}

TEST(CudaOps, RopeKvWrite) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(23);
  const int64_t blocks = 6, bs = 16, T = 21;
  for (auto style : {RopeParams::Style::Adjacent, RopeParams::Style::HalfSplit})
    for (int64_t d : {64, 128})
      for (bool qk_norm : {false, true}) {
        const int64_t H = d == 128 ? 32 : 6, Hkv = d == 128 ? 8 : 2;
        RopeParams p;
        p.style = style;
        p.rot_dim = d == 128 ? 128 : 32;  // partial rotation at d64
        p.theta = 500000.f;
        p.llama3_factor = 8.f;
        const Tensor qkv = rand_host({T, (H + 2 * Hkv) * d}, rng), qn = rand_host({d}, rng), kn = rand_host({d}, rng);
        std::vector<int32_t> slots(blocks * bs), pos(T);
        std::iota(slots.begin(), slots.end(), 0);
        std::shuffle(slots.begin(), slots.end(), rng);
        slots.resize(T);
        for (auto& v : pos) v = static_cast<int32_t>(rng() % 100000);
        KvLayer want{rand_host({blocks, bs, Hkv, d}, rng), rand_host({blocks, bs, Hkv, d}, rng)};
        KvLayer dev{to_device(want.k, DType::BF16), to_device(want.v, DType::BF16)};
        Tensor want_q = Tensor::empty_host(DType::F32, {T, H, d});
        ops::rope_kv_write(cpu_ctx(), qkv, ints_host(pos), ints_host(slots), p,
                           QkNorm{qk_norm ? &qn : nullptr, qk_norm ? &kn : nullptr, 1e-6f}, want_q, want);
        const Tensor dqn = to_device(qn, DType::F32), dkn = to_device(kn, DType::F32);
        Tensor q = poisoned_device(DType::BF16, {T, H, d});
        ops::rope_kv_write(cuda_ctx(), to_device(qkv, DType::BF16), to_device(ints_host(pos), DType::I32),
                           to_device(ints_host(slots), DType::I32), p,
                           QkNorm{qk_norm ? &dqn : nullptr, qk_norm ? &dkn : nullptr, 1e-6f}, q, dev);
        EXPECT_LE(nmse(result(q), want_q), kBf16Bound) << "d" << d << " qk_norm " << qk_norm;
        EXPECT_LE(nmse(result(dev.k), want.k), kBf16Bound) << "d" << d << " qk_norm " << qk_norm;
        EXPECT_LE(nmse(result(dev.v), want.v), kBf16Bound) << "d" << d;
        EXPECT_EQ(row_errors(), 0u);
      }
  // A slot outside the cache is reported, not written.
  const int64_t H = 4, Hkv = 2, d = 64;
  RopeParams p;
  p.rot_dim = 64;
  KvLayer dev{poisoned_device(DType::BF16, {2, 16, Hkv, d}), poisoned_device(DType::BF16, {2, 16, Hkv, d})};
  Tensor q = poisoned_device(DType::BF16, {1, H, d});
  ops::rope_kv_write(cuda_ctx(), to_device(rand_host({1, (H + 2 * Hkv) * d}, rng), DType::BF16),
                     to_device(ints_host({3}), DType::I32), to_device(ints_host({32}), DType::I32), p, QkNorm{}, q,
                     dev);
  EXPECT_EQ(row_errors(), unsigned{kRowErrKvSlot});
}

TEST(CudaOps, Matmul) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(17);
  for (int64_t m : {1, 3, 8, 9, 64, 200})
    for (int64_t n : {576, 1000})
      for (bool bias : {false, true})
        for (DType yt : {DType::BF16, DType::F32}) {
          const int64_t k = 576;
          const Tensor x = rand_host({m, k}, rng), w = rand_host({n, k}, rng, 0.05f), b = rand_host({n}, rng);
          Tensor want = Tensor::empty_host(DType::F32, {m, n});
          ops::matmul(cpu_ctx(), x, w, want, bias ? &b : nullptr);
          const Tensor dx = to_device(x, DType::BF16), dw = to_device(w, DType::BF16), db = to_device(b, DType::F32);
          Tensor y = poisoned_device(yt, {m, n});
          const MatmulArgs args{dx, dw, y, bias ? &db : nullptr};
          const std::string chosen = registries().matmul.select(args, cuda_ctx()).name;
          EXPECT_EQ(chosen, m <= 8 ? "cuda.gemv" : "cuda.cublaslt");
          ops::matmul(cuda_ctx(), dx, dw, y, bias ? &db : nullptr);
          EXPECT_LE(nmse(result(y), want), kBf16Bound) << chosen << " m" << m << " n" << n << " bias " << bias;
          if (m <= 8) {  // the GEMM path must agree on decode shapes too
            y = poisoned_device(yt, {m, n});
            registries().matmul.run_variant("cuda.cublaslt", args, cuda_ctx());
            EXPECT_LE(nmse(result(y), want), kBf16Bound) << "cuda.cublaslt m" << m;
          }
        }
}

// Batch-invariant mode's matmul (cuda.gemm_fixed: the flat GEMM up to 64 rows, tiled kernels of two tile
// shapes beyond, picked by the grid they give) against the reference, and bitwise: any M rows, at any
// offset in the batch, give exactly the bits they give inside a 600-row call; the default dispatch's GEMV
// (M <= 8) gives them too. K of 3 chunks (empty fixed ranges), 18 (ranges of unequal length), 128
// (llama3-8b's K 4096); N off the tile sizes, and wide enough (8192) for the larger tiles.
TEST(CudaOps, MatmulFixedReductionIsBatchInvariant) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(23);
  Context inv = cuda_ctx();
  inv.batch_invariant = true;
  const int64_t kRows = 600;
  for (auto [k, n] : {std::pair<int64_t, int64_t>{96, 200}, {576, 1000}, {4096, 1000}, {576, 8192}})
    for (DType yt : {DType::BF16, DType::F32}) {
      const bool bias = n == 1000;
      const Tensor x = rand_host({kRows, k}, rng), w = rand_host({n, k}, rng, 0.05f), b = rand_host({n}, rng);
      Tensor want = Tensor::empty_host(DType::F32, {kRows, n});
      ops::matmul(cpu_ctx(), x, w, want, bias ? &b : nullptr);
      const Tensor dx = to_device(x, DType::BF16), dw = to_device(w, DType::BF16), db = to_device(b, DType::F32);
      Tensor full = poisoned_device(yt, {kRows, n});
      registries().matmul.run_variant("cuda.gemm_fixed", {dx, dw, full, bias ? &db : nullptr}, cuda_ctx());
      const Tensor all = result(full);
      EXPECT_LE(nmse(all, want), kBf16Bound) << "k" << k << " n" << n;
      for (int64_t m : {1, 2, 8, 9, 16, 17, 40, 64, 65, 128, 129, 200, 333})
        for (int64_t off : {int64_t{0}, kRows - m}) {
          const Tensor sx = dx.slice_rows(off, m);
          Tensor y = poisoned_device(yt, {m, n});
          const MatmulArgs args{sx, dw, y, bias ? &db : nullptr};
          const std::string chosen = registries().matmul.select(args, inv).name;
          EXPECT_EQ(chosen, m <= 8 ? "cuda.gemv" : "cuda.gemm_fixed") << "m" << m;
          ops::matmul(inv, sx, dw, y, bias ? &db : nullptr);
          const Tensor got = result(y);
          EXPECT_EQ(std::memcmp(got.data, all.row(off), got.nbytes()), 0)
              << chosen << " k" << k << " n" << n << " m" << m << " rows from " << off;
        }
    }
}

// A weight of a Q6_K row as cuda.qmma multiplies it: sc * (q - 32) rounded to f16 (nearest, ties to even;
// integers are exact up to 2048, even ones up to 4096), times d in f32.
float q6k_as_qmma(const quant::BlockQ6_K* row, int64_t e) {
  const quant::BlockQ6_K& b = row[e / 256];
  const int i = static_cast<int>(e % 256), h = i / 128, k = i % 128 / 32, l = i % 32;
  const int q =
      ((b.ql[64 * h + 32 * (k % 2) + l] >> (k < 2 ? 0 : 4)) & 0xF) | (((b.qh[32 * h + l] >> (2 * k)) & 3) << 4);
  const int v = b.scales[8 * h + 2 * k + l / 16] * (q - 32);
  int a = std::abs(v);
  if (a > 2048) a = 2 * (a / 2 + (a % 2 == 1 && (a / 2) % 2 == 1 ? 1 : 0));
  return quant::half_value(b.d) * static_cast<float>(v < 0 ? -a : a);
}

// GGUF-typed weights on the device decode to exactly the reference dequantizer's values on every path:
// multiplied by rows of the identity (each output one product 1 x w, the rest exact zeros), y = w^T bit
// for bit — f32 values through cuda.qmv (M <= 4) and cuda.qmma (Q4_K, M <= 16; Q6_K's products rounded to
// f16 first, q6k_as_qmma), rounded to bf16 through the
// flat GEMM (cuda.qgemv, up to 64 rows, decoding on the fly) and the dequantizing GEMMs (cuBLASLt; the
// fixed-reduction GEMM).
TEST(CudaOps, QuantizedWeightsDecodeToTheReferenceOnEveryPath) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(29);
  for (DType wt : testing::kWeightTypes) {
    if (!dtype_info(wt).quantized) continue;
    const int64_t k = 512, n = 40;  // two K-quant blocks, 16 of the 32-element types
    const Tensor w = testing::random_weights(wt, {n, k}, rng);
    Tensor exact = Tensor::empty_host(DType::F32, {n, k}), rounded = Tensor::empty_host(DType::F32, {n, k});
    for (int64_t r = 0; r < n; ++r) dequantize_row(wt, w.row(r), exact.ptr<float>() + r * k, k);
    for (int64_t j = 0; j < n * k; ++j) rounded.ptr<float>()[j] = bf16_to_f32(f32_to_bf16(exact.ptr<float>()[j]));
    Tensor mma = Tensor::empty_host(DType::F32, {n, k});
    for (int64_t r = 0; r < n; ++r)
      for (int64_t e = 0; e < k; ++e)
        mma.ptr<float>()[r * k + e] = wt == DType::Q6_K ? q6k_as_qmma(static_cast<const quant::BlockQ6_K*>(w.row(r)), e)
                                                        : exact.ptr<float>()[r * k + e];
    const Tensor dw = to_device(w, wt);
    Tensor eye = Tensor::empty_host(DType::F32, {k, k});
    std::fill_n(eye.ptr<float>(), k * k, 0.f);
    for (int64_t i = 0; i < k; ++i) eye.ptr<float>()[i * k + i] = 1.f;
    const Tensor dx = to_device(eye, DType::BF16);
    for (const std::string variant :
         {"cuda.qmma", "cuda.qmv", "cuda.qgemv", "cuda.qdequant_cublaslt", "cuda.qgemm_fixed"})
      for (int64_t m : {int64_t{2}, int64_t{16}, int64_t{64}, k}) {
        const bool exact_path = variant == "cuda.qmv" || variant == "cuda.qmma";
        if (variant == "cuda.qmma" && ((wt != DType::Q4_K && wt != DType::Q6_K) || m > 16)) continue;
        if (variant == "cuda.qmv" && m != 2) continue;
        if (!exact_path && m <= 16) continue;
        if (variant == "cuda.qgemv" && m > 64) continue;
        const Tensor& want = variant == "cuda.qmma" ? mma : exact_path ? exact : rounded;
        for (int64_t off = 0; off < k; off += m) {
          Tensor y = poisoned_device(DType::F32, {m, n});
          registries().matmul.run_variant(variant, {dx.slice_rows(off, m), dw, y, nullptr}, cuda_ctx());
          const Tensor got = result(y);  // got[i, r] = w[r, off + i]
          int mismatches = 0;
          for (int64_t i = 0; i < m; ++i)
            for (int64_t r = 0; r < n; ++r)
              mismatches += got.ptr<float>()[i * n + r] != want.ptr<float>()[r * k + off + i];
          EXPECT_EQ(mismatches, 0) << dtype_name(wt) << " " << variant << " m" << m << " from " << off;
        }
      }
  }
}

// Batch-invariant mode with GGUF-typed weights: the flat GEMM (cuda.qgemv, M <= 64) and the fixed-reduction
// GEMM of the dequantized matrix (cuda.qgemm_fixed) give every row the bits it has inside a 300-row call;
// the default dispatch (cuda.qmma for Q4_K and Q6_K to 16 rows, cuda.qmv to 4, the flat GEMM to 64,
// dequantized cuBLASLt beyond) agrees with the reference.
TEST(CudaOps, QuantizedMatmulIsBatchInvariantInFixedMode) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(31);
  Context inv = cuda_ctx();
  inv.batch_invariant = true;
  const int64_t kRows = 300, k = 1024, n = 700;
  for (DType wt : {DType::Q4_K, DType::Q6_K, DType::Q8_0, DType::Q4_0, DType::Q3_K}) {
    const Tensor x = rand_host({kRows, k}, rng), w = testing::random_weights(wt, {n, k}, rng, 0.05f),
                 b = rand_host({n}, rng);
    Tensor want = Tensor::empty_host(DType::F32, {kRows, n});
    ops::matmul(cpu_ctx(), x, w, want, &b);
    const Tensor dx = to_device(x, DType::BF16), dw = to_device(w, wt), db = to_device(b, DType::F32);
    Tensor full = poisoned_device(DType::F32, {kRows, n});
    ops::matmul(inv, dx, dw, full, &db);
    const Tensor all = result(full);
    for (int64_t m : {1, 2, 3, 5, 8, 9, 33, 64, 65, 200}) {
      const Tensor sx = dx.slice_rows(kRows - m, m);
      Tensor y = poisoned_device(DType::F32, {m, n});
      const MatmulArgs args{sx, dw, y, &db};
      const std::string chosen = registries().matmul.select(args, inv).name;
      EXPECT_EQ(chosen, m <= 64 ? "cuda.qgemv" : "cuda.qgemm_fixed") << "m" << m;
      ops::matmul(inv, sx, dw, y, &db);
      const Tensor got = result(y);
      EXPECT_EQ(std::memcmp(got.data, all.row(kRows - m), got.nbytes()), 0) << dtype_name(wt) << " m" << m;
      EXPECT_EQ(registries().matmul.select(args, cuda_ctx()).name, (wt == DType::Q4_K || wt == DType::Q6_K) && m <= 16
                                                                       ? "cuda.qmma"
                                                                   : m <= 4  ? "cuda.qmv"
                                                                   : m <= 64 ? "cuda.qgemv"
                                                                             : "cuda.qdequant_cublaslt");
      ops::matmul(cuda_ctx(), sx, dw, y, &db);
      EXPECT_LE(nmse(result(y), want.slice_rows(kRows - m, m)), kBf16Bound) << dtype_name(wt) << " m" << m;
    }
  }
}

struct SeqSpec {
  int32_t q_len, kv_len;
};

// A random paged cache holding sequences of the given lengths behind shuffled (non-contiguous) block
// tables, on the host (f32, for the reference) and on the device (bf16).
struct PagedCache {
  KvLayer host, dev;
  int64_t max_blocks = 1;
  std::vector<std::vector<int32_t>> tables;  // per sequence

  PagedCache(int64_t n_kv, int64_t d, int64_t bs, const std::vector<int32_t>& kv_lens, std::mt19937& rng) {
    int64_t blocks = 3;
    for (int32_t len : kv_lens) {
      blocks += (len + bs - 1) / bs;
      max_blocks = std::max(max_blocks, (len + bs - 1) / bs);
    }
    host = KvLayer{rand_host({blocks, bs, n_kv, d}, rng), rand_host({blocks, bs, n_kv, d}, rng)};
    dev = KvLayer{to_device(host.k, DType::BF16), to_device(host.v, DType::BF16)};
    std::vector<int32_t> perm(blocks);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    int32_t next = 0;
    for (int32_t len : kv_lens) {
      tables.emplace_back(max_blocks, -1);
      for (int64_t b = 0; b < (len + bs - 1) / bs; ++b) tables.back()[b] = perm[next++];
    }
  }

  // The batch of sequences `which` (indices into the tables), with these q/kv lengths, rows packed in order.
  AttentionBatch batch(const std::vector<size_t>& which, const std::vector<SeqSpec>& specs, float scale) const {
    AttentionBatch b;
    b.scale = scale;
    std::vector<int32_t> flat, info;
    int32_t q_begin = 0;
    for (size_t i = 0; i < which.size(); ++i) {
      b.seqs.push_back({q_begin, specs[i].q_len, specs[i].kv_len, tables[which[i]].data()});
      flat.insert(flat.end(), tables[which[i]].begin(), tables[which[i]].end());
      info.insert(info.end(), {q_begin, specs[i].q_len, specs[i].kv_len});
      q_begin += specs[i].q_len;
    }
    b.block_tables = to_device(ints_host(flat).reshaped({static_cast<int64_t>(which.size()), max_blocks}), DType::I32);
    b.seq_info = to_device(ints_host(info), DType::I32);
    return b;
  }
};

// CPU reference vs the CUDA variant `variant`.
void check_attention(const std::string& variant, int64_t n_heads, int64_t n_kv, int64_t d, int64_t bs,
                     const std::vector<SeqSpec>& specs, uint32_t seed, float q_scale = 2.f) {
  std::mt19937 rng(seed);
  std::vector<int32_t> lens;
  std::vector<size_t> all;
  int64_t n_tok = 0;
  for (const SeqSpec& s : specs) {
    lens.push_back(s.kv_len);
    all.push_back(all.size());
    n_tok += s.q_len;
  }
  const PagedCache cache(n_kv, d, bs, lens, rng);
  const AttentionBatch batch = cache.batch(all, specs, 1.f / std::sqrt(static_cast<float>(d)));
  const Tensor q = rand_host({n_tok, n_heads, d}, rng, q_scale);
  Tensor want = Tensor::empty_host(DType::F32, {n_tok, n_heads, d});
  ops::attention(cpu_ctx(), q, cache.host, batch, want);

  const Tensor dq = to_device(q, DType::BF16);
  Tensor out = poisoned_device(DType::BF16, {n_tok, n_heads, d});
  registries().attention.run_variant(variant, {dq, cache.dev, batch, out}, cuda_ctx());
  std::string desc = variant + " h" + std::to_string(n_heads) + "/" + std::to_string(n_kv) + " d" + std::to_string(d) +
                     " bs" + std::to_string(bs);
  for (const SeqSpec& s : specs) desc += " " + std::to_string(s.q_len) + "/" + std::to_string(s.kv_len);
  EXPECT_LE(nmse(result(out), want), kAttentionBound) << desc;
}

TEST(CudaOps, AttentionPrefill) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 100;
  const std::vector<std::vector<SeqSpec>> batches = {
      {{1, 1}}, {{200, 200}}, {{77, 300}, {1, 50}, {129, 129}}, {{5, 50}, {1, 17}, {9, 9}}, {{300, 1000}}};
  for (int64_t group : {1, 3, 4, 8})
    for (int64_t d : {64, 128})
      for (int64_t bs : {16, 32})
        for (const auto& specs : batches) check_attention("cuda.flash_prefill", 2 * group, 2, d, bs, specs, seed++);
  // Peaked scores (logits with a spread of ~10 in log2 units): a row's max keeps jumping by more than the
  // kernel's rescale slack as later key tiles arrive, so the deferred-rescale path runs.
  for (int64_t d : {64, 128})
    check_attention("cuda.flash_prefill", 8, 2, d, 16, {{300, 1000}, {130, 700}}, seed++, 8.f);
}

TEST(CudaOps, AttentionDecode) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 200;
  // Lengths at and around the 128/256-key block stages, one sequence much longer than the rest (its
  // plan does not fit the others: they re-derive their splits), and a group over 16 (two head slices).
  const std::vector<std::vector<SeqSpec>> batches = {{{1, 1}},
                                                     {{1, 37}, {1, 5}, {1, 100}},
                                                     {{1, 1500}},
                                                     {{1, 5000}, {1, 64}, {1, 129}},
                                                     {{1, 4096}, {1, 16}, {1, 128}, {1, 3}, {1, 2049}}};
  for (int64_t group : {1, 3, 4, 7, 16, 20})
    for (int64_t d : {64, 128})
      for (const auto& specs : batches) check_attention("cuda.decode_splitkv", 2 * group, 2, d, 16, specs, seed++);
  check_attention("cuda.decode_splitkv", 8, 2, 128, 24, {{1, 3000}, {1, 50}}, seed++);  // pages of 24 keys
  // One KV head over a long context: one wave of ~80 two-stage splits, so the merge folds them in several passes.
  check_attention("cuda.decode_splitkv", 4, 1, 128, 16, {{1, 20000}}, seed++);
  // Many short sequences (at least as many (sequence, KV head) units as SMs): the narrow block shape, one
  // split and several (lengths up to 4 wide stages).
  std::mt19937 len_rng(7);
  for (int max_len : {130, 512}) {
    std::vector<SeqSpec> many(80);
    for (SeqSpec& s : many) s = {1, static_cast<int32_t>(1 + len_rng() % max_len)};
    for (int64_t d : {64, 128}) check_attention("cuda.decode_splitkv", 16, 4, d, 16, many, seed++);
  }
  // The prefill kernel is correct on decode batches too (it is the fallback for them).
  check_attention("cuda.flash_prefill", 8, 2, 128, 16, {{1, 3000}, {1, 7}}, seed++);
}

TEST(CudaOps, AttentionGeneric) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 300;
  const std::vector<std::vector<SeqSpec>> batches = {
      {{1, 1}}, {{200, 200}}, {{77, 300}, {1, 50}, {129, 129}}, {{1, 3000}, {1, 7}, {1, 128}}};
  for (int64_t d : {16, 32, 64, 80, 96, 128, 256})
    for (int64_t group : {1, 4})
      for (const auto& specs : batches) check_attention("cuda.attention_generic", 2 * group, 2, d, 16, specs, seed++);
  check_attention("cuda.attention_generic", 8, 2, 96, 16, {{300, 1000}}, seed++, 8.f);  // peaked scores
  // The dispatcher keeps the tiled kernels where they exist and takes this one elsewhere.
  std::mt19937 rng(seed);
  for (int64_t d : {32, 64, 96, 128}) {
    const Tensor q = to_device(rand_host({4, 4, d}, rng), DType::BF16);
    Tensor out = empty_device(DType::BF16, {4, 4, d});
    const KvLayer cache{to_device(rand_host({3, 16, 2, d}, rng), DType::BF16),
                        to_device(rand_host({3, 16, 2, d}, rng), DType::BF16)};
    std::vector<int32_t> table = {0, 1, 2};
    AttentionBatch batch{{{0, 4, 40, table.data()}}, 0.1f};
    batch.block_tables = to_device(ints_host(table).reshaped({1, 3}), DType::I32);
    batch.seq_info = to_device(ints_host({0, 4, 40}), DType::I32);
    const std::string chosen = registries().attention.select({q, cache, batch, out}, cuda_ctx()).name;
    EXPECT_EQ(chosen, d == 64 || d == 128 ? "cuda.flash_prefill" : "cuda.attention_generic") << "d" << d;
  }
}

// Batch-invariant mode's attention, bitwise. Prompt rows: however a prompt is cut into chunks (a chunk of
// one token included, which goes to the prefill kernel as a prompt row), each query row gives the bits it
// gives in the whole prompt. Decode rows: a sequence gives the same bits alone and in any batch (fixed
// 256-key splits), across split boundaries.
// Bytes of entry i of a tensor's outermost dimension (a token's [H, d] block).
const char* outer(const Tensor& t, int64_t i) {
  return static_cast<const char*>(t.data) + i * (t.nbytes() / t.dim(0));
}

TEST(CudaOps, AttentionIsBatchInvariantInFixedMode) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(31);
  Context inv = cuda_ctx();
  inv.batch_invariant = true;
  for (int64_t d : {64, 128}) {
    const int64_t H = 8, Hkv = 2, bs = 16;
    const float scale = 1.f / std::sqrt(static_cast<float>(d));
    // Prompt rows of one 700-token prompt.
    {
      const int32_t L = 700;
      const PagedCache cache(Hkv, d, bs, {L}, rng);
      const Tensor q = to_device(rand_host({L, H, d}, rng, 4.f), DType::BF16);
      auto run = [&](int32_t begin) {
        AttentionBatch b = cache.batch({0}, {{L - begin, L}}, scale);
        b.n_decode = 0;  // prompt rows
        const Tensor sq = q.slice_rows(begin, L - begin);
        Tensor out = poisoned_device(DType::BF16, {L - begin, H, d});
        const AttentionPlan plan = ops::plan_attention(inv, sq, cache.dev, b);
        EXPECT_EQ(plan.parts.at(0).variant_name, "cuda.flash_prefill");
        ops::attention(inv, sq, cache.dev, plan, out);
        return result(out);
      };
      const Tensor whole = run(0);
      for (int32_t begin : {1, 37, 128, 129, 300, 699}) {
        const Tensor part = run(begin);
        EXPECT_EQ(std::memcmp(part.data, outer(whole, begin), part.nbytes()), 0) << "d" << d << " chunk from " << begin;
      }
    }
    // Decode rows of sequences around the 256-key split size, alone and together.
    {
      const std::vector<int32_t> lens = {1, 255, 256, 257, 1000, 3000, 70};
      const PagedCache cache(Hkv, d, bs, lens, rng);
      const int64_t n = static_cast<int64_t>(lens.size());
      const Tensor q = to_device(rand_host({n, H, d}, rng, 4.f), DType::BF16);
      auto run = [&](const std::vector<size_t>& which) {
        std::vector<SeqSpec> specs;
        for (size_t i : which) specs.push_back({1, lens[i]});
        const AttentionBatch b = cache.batch(which, specs, scale);
        Tensor sq = empty_device(DType::BF16, {static_cast<int64_t>(which.size()), H, d});
        for (size_t j = 0; j < which.size(); ++j)
          EXPECT_EQ(cudaMemcpy(sq.slice_rows(static_cast<int64_t>(j), 1).data,
                               q.slice_rows(static_cast<int64_t>(which[j]), 1).data, q.nbytes() / n,
                               cudaMemcpyDeviceToDevice),
                    cudaSuccess);
        Tensor out = poisoned_device(DType::BF16, sq.shape);
        const AttentionPlan plan = ops::plan_attention(inv, sq, cache.dev, b);
        EXPECT_EQ(plan.parts.at(0).variant_name, "cuda.decode_splitkv");
        ops::attention(inv, sq, cache.dev, plan, out);
        return result(out);
      };
      std::vector<size_t> everyone(lens.size());
      std::iota(everyone.begin(), everyone.end(), size_t{0});
      std::vector<size_t> reversed(everyone.rbegin(), everyone.rend());
      const Tensor together = run(everyone), backwards = run(reversed);
      for (size_t i = 0; i < lens.size(); ++i) {
        const Tensor alone = run({i});
        const auto r = static_cast<int64_t>(i);
        EXPECT_EQ(std::memcmp(alone.data, outer(together, r), alone.nbytes()), 0) << "d" << d << " kv " << lens[i];
        EXPECT_EQ(std::memcmp(alone.data, outer(backwards, n - 1 - r), alone.nbytes()), 0)
            << "d" << d << " kv " << lens[i];
      }
    }
  }
}

TEST(CudaAllocator, ReusesBlocksAndEnforcesBudget) {
  SKIP_WITHOUT_GPU();
  DeviceAllocator& a = device_allocator();
  // Earlier tests (whole models) leave large cached blocks that would serve the over-budget request.
  a.empty_cache();
  a.release(a.allocate(1000));
  const size_t before = a.stats().reserved;
  void* p = a.allocate(900);  // same 512-byte granule count: a cached block comes back, nothing new reserved
  EXPECT_EQ(a.stats().reserved, before);
  a.release(p);
  const size_t reserved = a.stats().reserved;
  a.set_budget(reserved + (size_t{4} << 20));
  EXPECT_THROW(a.allocate(size_t{64} << 20), Error);
  a.set_budget(0);
}

}  // namespace
}  // namespace kestrel::backends::cuda

#endif  // KESTREL_HAVE_CUDA
