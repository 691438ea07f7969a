// Pages of the windowed, reordered formats (SKVQ): open blocks read back exactly, code blocks through the
// layer's channel order, clip and code limit; kv_seal encodes an open block as a direct write would; and
// attention over a block table that mixes open and code blocks agrees on every CPU variant with a plain
// softmax over the decoded rows.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "backends/backends.h"
#include "core/error.h"
#include "decoded_attention.h"
#include "ops/ops.h"

namespace kestrel::ops {
namespace {

constexpr int64_t kHkv = 2, kD = 64, kBs = 4, kCode = 6, kOpen = 3, kGroup = 32;

Tensor host(DType t, std::vector<int64_t> shape) {
  return Tensor::empty_host(t, std::move(shape));
}

// U2 pages (ternary values), groups of 32, a random channel order per head, clip 0.9, three open blocks.
KvLayer windowed_layer(bool reorder, uint32_t seed) {
  KvLayer l;
  l.k = host(DType::U2, {kCode, kBs, kHkv, kD});
  l.v = host(DType::U2, {kCode, kBs, kHkv, kD});
  l.k_params = host(DType::F16, {kCode, kBs, kHkv, kD / kGroup, 2});
  l.v_params = host(DType::F16, {kCode, kBs, kHkv, kD / kGroup, 2});
  l.k_open = host(DType::F32, {kOpen, kBs, kHkv, kD});
  l.v_open = host(DType::F32, {kOpen, kBs, kHkv, kD});
  l.k_coding.clip = 0.9f;
  l.v_coding.qmax = 2;
  if (reorder) {
    std::mt19937 rng(seed);
    for (KvCoding* c : {&l.k_coding, &l.v_coding}) {
      c->perm = host(DType::I32, {kHkv, kD});
      for (int64_t h = 0; h < kHkv; ++h) {
        int32_t* p = c->perm.ptr<int32_t>() + h * kD;
        std::iota(p, p + kD, 0);
        std::shuffle(p, p + kD, rng);
      }
    }
  }
  return l;
}

std::vector<float> random_rows(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(static_cast<size_t>(n * kHkv * kD));
  for (size_t i = 0; i < x.size(); ++i) x[i] = nd(rng) * ((i % kD) < 4 ? 8.f : 1.f);  // a few outlier channels
  return x;
}

TEST(KvWindowPages, OpenRowsAreExactCodeRowsFollowTheOrder) {
  KvLayer l = windowed_layer(true, 1);
  const std::vector<float> x = random_rows(2, 2);
  const int64_t open_slot = (kCode + 1) * kBs + 2, code_slot = 3 * kBs + 1;
  std::vector<float> y(kHkv * kD);
  for (bool v : {false, true}) {
    kv_store(l, v, open_slot, x.data());
    kv_load(l, v, open_slot, y.data());
    EXPECT_EQ(y, std::vector<float>(x.begin(), x.begin() + kHkv * kD));
    kv_store(l, v, code_slot, x.data() + kHkv * kD);
    kv_load(l, v, code_slot, y.data());
    // Within half a step of the widest group of each head (ternary values: a step is half the range).
    for (int64_t h = 0; h < kHkv; ++h) {
      const float* xh = x.data() + (kHkv + h) * kD;
      const auto [lo, hi] = std::minmax_element(xh, xh + kD);
      const float tol = (*hi - *lo) / (v ? 2 : 3);
      for (int64_t i = 0; i < kD; ++i) EXPECT_LE(std::fabs(y[h * kD + i] - xh[i]), tol) << h << " " << i;
    }
  }
  // The order changes which channels share a scale: the same row codes differently without it.
  KvLayer plain = windowed_layer(false, 1);
  std::vector<float> z(kHkv * kD);
  kv_store(plain, false, code_slot, x.data() + kHkv * kD);
  kv_load(plain, false, code_slot, z.data());
  kv_load(l, false, code_slot, y.data());
  EXPECT_NE(y, z);
}

TEST(KvWindowPages, SealEncodesAnOpenBlockAsADirectWrite) {
  KvLayer l = windowed_layer(true, 3);
  const std::vector<float> x = random_rows(kBs, 4);
  const int64_t row = kHkv * kD;
  for (int64_t j = 0; j < kBs; ++j)
    for (bool v : {false, true}) {
      kv_store(l, v, (kCode + 2) * kBs + j, x.data() + j * row);  // open block 2
      kv_store(l, v, 4 * kBs + j, x.data() + j * row);            // code block 4, directly
    }
  Tensor seals = host(DType::I32, {2, 2});
  const int32_t pairs[4] = {static_cast<int32_t>(kCode + 2), 1, -1, 5};  // the second row is skipped
  std::copy(pairs, pairs + 4, seals.ptr<int32_t>());
  const Context ctx = backends::make_context(Device::Cpu);
  kv_seal(ctx, seals, l);
  std::vector<float> a(row), b(row);
  for (int64_t j = 0; j < kBs; ++j)
    for (bool v : {false, true}) {
      kv_load(l, v, 1 * kBs + j, a.data());
      kv_load(l, v, 4 * kBs + j, b.data());
      EXPECT_EQ(a, b) << j;
    }
  const int32_t bad[2] = {1, 2};  // code -> code is not a seal
  std::copy(bad, bad + 2, seals.ptr<int32_t>());
  EXPECT_THROW(kv_seal(ctx, seals.slice_rows(0, 1), l), Error);
}

TEST(KvWindowPages, AttentionOverMixedBlocksAgreesOnEveryVariant) {
  KvLayer l = windowed_layer(true, 5);
  const int64_t H = 4, row = kHkv * kD;
  // One sequence of 15 positions over blocks: open (a sink), code, code, open (the window).
  const std::vector<int32_t> table = {static_cast<int32_t>(kCode), 2, 5, static_cast<int32_t>(kCode + 1)};
  const int32_t kv_len = 15, q_len = 3;
  const std::vector<float> x = random_rows(2 * kv_len, 6);
  for (int32_t p = 0; p < kv_len; ++p) {
    const int64_t slot = int64_t{table[p / kBs]} * kBs + p % kBs;
    kv_store(l, false, slot, x.data() + p * row);
    kv_store(l, true, slot, x.data() + (kv_len + p) * row);
  }
  Tensor q = host(DType::F32, {q_len, H, kD});
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 0.3f);
  for (int64_t i = 0; i < q.numel(); ++i) q.ptr<float>()[i] = nd(rng);
  AttentionBatch batch;
  batch.scale = 1.f / std::sqrt(static_cast<float>(kD));
  batch.seqs = {{0, q_len, kv_len, table.data()}};

  expect_attention_over_decoded_rows(l, q, batch);
}

}  // namespace
}  // namespace kestrel::ops
