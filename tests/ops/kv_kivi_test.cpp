// Pages of KIVI's formats: keys per channel over token groups (a block holds two groups here), values per token.
// A code block's keys are the per-channel codec's direct encoding of its rows and read back within each
// channel's own step; a row of them alone is refused; kv_seal and kv_write (gathering a block's rows in any
// order, refusing a partial block) store what a direct block write stores; and attention over a block table
// that mixes code and open blocks agrees on every CPU variant with a plain softmax over the decoded rows.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "backends/backends.h"
#include "core/error.h"
#include "core/kv_codec.h"
#include "decoded_attention.h"
#include "ops/ops.h"

namespace kestrel::ops {
namespace {

constexpr int64_t kHkv = 2, kD = 64, kBs = 8, kTokens = 4, kCode = 6, kOpen = 3, kGroup = 32;
constexpr int64_t kRow = kHkv * kD;

Tensor host(DType t, std::vector<int64_t> shape) {
  return Tensor::empty_host(t, std::move(shape));
}

// U2 keys per channel over groups of kTokens tokens, U2 values per kGroup channels, f32 open blocks (exact).
KvLayer kivi_layer() {
  KvLayer l;
  l.k = host(DType::U2, {kCode, kBs, kHkv, kD});
  l.v = host(DType::U2, {kCode, kBs, kHkv, kD});
  l.k_params = host(DType::F16, {kCode, kBs / kTokens, kHkv, kD, 2});
  l.v_params = host(DType::F16, {kCode, kBs, kHkv, kD / kGroup, 2});
  l.k_open = host(DType::F32, {kOpen, kBs, kHkv, kD});
  l.v_open = host(DType::F32, {kOpen, kBs, kHkv, kD});
  l.k_coding.token_group = static_cast<int>(kTokens);
  return l;
}

// n rows of every kv head; channel 1 of each head is an outlier, every channel has its own offset.
std::vector<float> random_rows(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(static_cast<size_t>(n * kRow));
  for (size_t i = 0; i < x.size(); ++i) x[i] = nd(rng) * ((i % kD) == 1 ? 20.f : 1.f) + 0.05f * (i % kD);
  return x;
}

// The bytes a block holds: its key and value codes and params.
std::vector<uint8_t> block_bytes(const KvLayer& l, int64_t block) {
  std::vector<uint8_t> out;
  for (const Tensor* t : {&l.k, &l.v, &l.k_params, &l.v_params}) {
    const size_t per = t->nbytes() / static_cast<size_t>(t->dim(0));
    const auto* p = static_cast<const uint8_t*>(t->data) + per * static_cast<size_t>(block);
    out.insert(out.end(), p, p + per);
  }
  return out;
}

TEST(KvKiviPages, BlockKeysAreThePerChannelCodecsAndRowsAreRefused) {
  KvLayer l = kivi_layer();
  const std::vector<float> x = random_rows(kBs, 1);
  kv_store_block(l, false, 3, x.data());
  kv_store_block(l, true, 3, x.data());
  const int64_t rb = row_bytes(DType::U2, kD);
  for (int64_t g = 0; g < kBs / kTokens; ++g)
    for (int64_t h = 0; h < kHkv; ++h) {
      // A direct quantization of the group's rows of this head.
      std::vector<uint8_t> codes(static_cast<size_t>(kTokens * rb));
      std::vector<uint16_t> params(2 * kD);
      quant::kv_encode_channels<quant::KvCode::U2>(x.data() + g * kTokens * kRow + h * kD, kRow, kTokens, kD,
                                                   codes.data(), rb, params.data());
      const auto* stored_params = l.k_params.ptr<uint16_t>() + ((3 * (kBs / kTokens) + g) * kHkv + h) * kD * 2;
      EXPECT_EQ(std::vector<uint16_t>(stored_params, stored_params + 2 * kD), params) << g << " " << h;
      for (int64_t t = 0; t < kTokens; ++t) {
        const auto* stored = static_cast<const uint8_t*>(l.k.data) + ((3 * kBs + g * kTokens + t) * kHkv + h) * rb;
        EXPECT_EQ(std::vector<uint8_t>(stored, stored + rb),
                  std::vector<uint8_t>(codes.begin() + t * rb, codes.begin() + (t + 1) * rb))
            << g << " " << h << " " << t;
      }
      // Read back within half a step of each channel's own range over its token group.
      std::vector<float> y(kD);
      for (int64_t t = 0; t < kTokens; ++t) {
        const int64_t p = g * kTokens + t;
        kv_load_head(l, false, 3 * kBs + p, h, y.data());
        for (int64_t i = 0; i < kD; ++i) {
          float lo = INFINITY, hi = -INFINITY;
          for (int64_t u = 0; u < kTokens; ++u) {
            const float e = x[(g * kTokens + u) * kRow + h * kD + i];
            lo = std::min(lo, e), hi = std::max(hi, e);
          }
          const float tol = (hi - lo) / 6 + 2e-3f * std::max(std::fabs(lo), std::fabs(hi));
          EXPECT_LE(std::fabs(y[i] - x[p * kRow + h * kD + i]), tol) << p << " " << h << " " << i;
        }
      }
    }
  // A key row alone cannot be coded (its scales span its group); values are per token, open rows plain.
  EXPECT_THROW(kv_store(l, false, 2 * kBs + 1, x.data()), Error);
  EXPECT_NO_THROW(kv_store(l, true, 2 * kBs + 1, x.data()));
  EXPECT_NO_THROW(kv_store(l, false, (kCode + 1) * kBs + 1, x.data()));
  std::vector<float> y(kRow);
  kv_load(l, false, (kCode + 1) * kBs + 1, y.data());
  EXPECT_EQ(y, std::vector<float>(x.begin(), x.begin() + kRow));
}

TEST(KvKiviPages, SealAndWriteStoreWhatADirectBlockWriteStores) {
  const std::vector<float> x = random_rows(kBs, 2);
  KvLayer l = kivi_layer();
  kv_store_block(l, false, 2, x.data());  // the direct write
  kv_store_block(l, true, 2, x.data());
  for (int64_t j = 0; j < kBs; ++j)
    for (bool v : {false, true}) kv_store(l, v, (kCode + 1) * kBs + j, x.data() + j * kRow);  // open block 1
  Tensor seals = host(DType::I32, {1, 2});
  seals.ptr<int32_t>()[0] = static_cast<int32_t>(kCode + 1);
  seals.ptr<int32_t>()[1] = 4;
  const Context ctx = backends::make_context(Device::Cpu);
  kv_seal(ctx, seals, l);
  EXPECT_EQ(block_bytes(l, 4), block_bytes(l, 2));

  // kv_write on every CPU variant: a code block's rows in shuffled order, beside rows bound for an open block.
  std::vector<int32_t> slots(kBs + 2);
  std::iota(slots.begin(), slots.begin() + kBs, static_cast<int32_t>(5 * kBs));
  slots[kBs] = static_cast<int32_t>((kCode + 2) * kBs);
  slots[kBs + 1] = static_cast<int32_t>((kCode + 2) * kBs + 1);
  std::vector<int64_t> order(slots.size());
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(3));
  const std::vector<float> extra = random_rows(2, 4);
  Tensor k = host(DType::F32, {static_cast<int64_t>(slots.size()), kHkv, kD}), v = host(DType::F32, k.shape),
         s = host(DType::I32, {static_cast<int64_t>(slots.size())});
  for (size_t r = 0; r < order.size(); ++r) {
    const int64_t i = order[r];
    const float* src = i < kBs ? x.data() + i * kRow : extra.data() + (i - kBs) * kRow;
    std::copy_n(src, kRow, k.ptr<float>() + r * kRow);
    std::copy_n(src, kRow, v.ptr<float>() + r * kRow);
    s.ptr<int32_t>()[r] = slots[i];
  }
  Tensor partial_k = host(DType::F32, {kBs - 1, kHkv, kD}), partial_s = host(DType::I32, {kBs - 1});
  std::copy_n(x.begin(), (kBs - 1) * kRow, partial_k.ptr<float>());
  std::iota(partial_s.ptr<int32_t>(), partial_s.ptr<int32_t>() + kBs - 1, static_cast<int32_t>(3 * kBs));
  for (const char* forced : {"", "cpu.ref"}) {
    Context wctx = backends::make_context(Device::Cpu);
    if (*forced) wctx.forced["kv_write"] = forced;
    KvLayer w = kivi_layer();
    kv_write(wctx, k, v, s, w);
    std::vector<float> a(kRow), b(kRow);
    for (int64_t j = 0; j < kBs; ++j)
      for (bool val : {false, true}) {
        kv_load(w, val, 5 * kBs + j, a.data());
        kv_load(l, val, 2 * kBs + j, b.data());
        ASSERT_EQ(a, b) << forced << " " << j;
      }
    kv_load(w, false, (kCode + 2) * kBs + 1, a.data());
    EXPECT_EQ(a, std::vector<float>(extra.begin() + kRow, extra.end())) << forced;
    // A write that holds only part of a code block is refused: its keys could not be coded.
    EXPECT_THROW(kv_write(wctx, partial_k, partial_k, partial_s, w), Error) << forced;
  }
}

TEST(KvKiviPages, AttentionOverMixedBlocksAgreesOnEveryVariant) {
  KvLayer l = kivi_layer();
  const int64_t H = 4;
  // A prefill chunk over code, code, open (the window) blocks, and a decode row over code, open.
  const std::vector<int32_t> table = {2, 5, static_cast<int32_t>(kCode + 1)};
  const std::vector<int32_t> table2 = {0, static_cast<int32_t>(kCode + 2)};
  const int32_t kv_len = 2 * kBs + 5, q_len = 3, kv_len2 = kBs + 3;
  const std::vector<float> keys_in = random_rows(5 * kBs, 5), vals_in = random_rows(5 * kBs, 6);
  int64_t next = 0;
  for (int32_t block : {table[0], table[1], table[2], table2[0], table2[1]}) {
    const float* k = keys_in.data() + next * kRow;
    const float* v = vals_in.data() + next * kRow;
    next += kBs;
    if (block < kCode) {
      kv_store_block(l, false, block, k);
      kv_store_block(l, true, block, v);
      continue;
    }
    for (int64_t j = 0; j < kBs; ++j) {
      kv_store(l, false, int64_t{block} * kBs + j, k + j * kRow);
      kv_store(l, true, int64_t{block} * kBs + j, v + j * kRow);
    }
  }
  Tensor q = host(DType::F32, {q_len + 1, H, kD});
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 0.3f);
  for (int64_t i = 0; i < q.numel(); ++i) q.ptr<float>()[i] = nd(rng);
  AttentionBatch batch;
  batch.scale = 1.f / std::sqrt(static_cast<float>(kD));
  batch.seqs = {{0, 1, kv_len2, table2.data()}, {1, q_len, kv_len, table.data()}};

  expect_attention_over_decoded_rows(l, q, batch);
}

}  // namespace
}  // namespace kestrel::ops
