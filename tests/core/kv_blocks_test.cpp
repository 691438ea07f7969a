#include "core/kv_blocks.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "core/dequant.h"
#include "core/half.h"

namespace kestrel::quant {
namespace {

// The finite E4M3 value nearest to x with ties to the even code, found by walking every code.
uint8_t nearest_e4m3(float x) {
  const float ax = std::min(std::fabs(x), 448.f);
  int best = 0;
  for (int c = 1; c <= 0x7e; ++c) {
    const float dc = std::fabs(e4m3_value(static_cast<uint8_t>(c)) - ax), db = std::fabs(e4m3_value(best) - ax);
    if (dc < db || (dc == db && c % 2 == 0)) best = c;
  }
  return static_cast<uint8_t>(best | (std::signbit(x) ? 0x80 : 0));
}

TEST(KvBlocks, E4m3DecodesEveryCodeAndRoundTrips) {
  EXPECT_EQ(e4m3_value(0x7e), 448.f);
  EXPECT_EQ(e4m3_value(0x01), std::ldexp(1.f, -9));  // smallest subnormal
  EXPECT_EQ(e4m3_value(0x08), std::ldexp(1.f, -6));  // smallest normal
  EXPECT_EQ(e4m3_value(0xb8), -1.f);
  EXPECT_TRUE(std::isnan(e4m3_value(0x7f)));
  EXPECT_TRUE(std::isnan(e4m3_value(0xff)));
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7f) == 0x7f) continue;
    EXPECT_EQ(e4m3_code(e4m3_value(static_cast<uint8_t>(c))), c) << c;
  }
}

TEST(KvBlocks, E4m3EncodeIsRoundToNearestEvenWithSaturation) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> exponent(-14.f, 10.f);
  for (int i = 0; i < 20000; ++i) {
    const float x = (i % 2 ? -1.f : 1.f) * std::exp2(exponent(rng));
    ASSERT_EQ(e4m3_code(x), nearest_e4m3(x)) << x;
  }
  // Exact ties between neighbours go to the even code: 1 + 1/16 lies between 1 (0x38) and 1.125 (0x39).
  EXPECT_EQ(e4m3_code(1.0625f), 0x38);
  EXPECT_EQ(e4m3_code(1.1875f), 0x3a);  // between 1.125 (0x39) and 1.25 (0x3a)
  EXPECT_EQ(e4m3_code(1e6f), 0x7e);
  EXPECT_EQ(e4m3_code(-std::numeric_limits<float>::infinity()), 0xfe);
  EXPECT_EQ(e4m3_code(std::nanf("")) & 0x7f, 0x7f);
}

TEST(KvBlocks, HalfBitsMatchesTheCompilersConversion) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> exponent(-30.f, 17.f);
  for (int i = 0; i < 100000; ++i) {
    const float x = (i % 2 ? -1.f : 1.f) * std::exp2(exponent(rng));
    ASSERT_EQ(half_bits(x), f32_to_f16(x)) << x;
  }
  for (float x : {0.f, -0.f, 65504.f, 65519.f, 65520.f, 1e-8f, 5.96e-8f, 2.98e-8f, 6.1e-5f})
    EXPECT_EQ(half_bits(x), f32_to_f16(x)) << x;
}

std::vector<float> random_row(int n, float spread, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.3f, spread);
  std::vector<float> x(n);
  for (float& v : x) v = nd(rng);
  return x;
}

TEST(KvBlocks, Int8BlockErrorIsHalfAStep) {
  const std::vector<float> x = random_row(kQKKv, 2.f, 1);
  BlockKvInt8 b;
  encode_block(x.data(), b);
  const float d = half_value(b.d);
  float w[kGroup];
  for (int g = 0; g < kQKKv / kGroup; ++g) {
    decode_group(&b, g, w);
    for (int i = 0; i < kGroup; ++i) {
      EXPECT_LE(std::fabs(w[i] - x[g * kGroup + i]), 0.5f * d + 1e-3f);
      EXPECT_EQ(w[i], element(&b, g * kGroup + i));
    }
  }
}

TEST(KvBlocks, Fp8BlockErrorIsRelative) {
  const std::vector<float> x = random_row(kQKKv, 3.f, 2);
  BlockKvFp8 b;
  encode_block(x.data(), b);
  const float d = half_value(b.d);
  float w[kGroup];
  for (int g = 0; g < kQKKv / kGroup; ++g) {
    decode_group(&b, g, w);
    for (int i = 0; i < kGroup; ++i) {
      const float v = x[g * kGroup + i];
      // 3 mantissa bits: half an ulp is 1/16 relative; below 2^-6 * d the subnormal step 2^-9 * d rules.
      EXPECT_LE(std::fabs(w[i] - v), std::max(std::fabs(v) / 16.f, d * std::ldexp(1.f, -10)) * 1.01f) << v;
      EXPECT_EQ(w[i], element(&b, g * kGroup + i));
    }
  }
}

TEST(KvBlocks, ConstantAndZeroBlocksDecodeExactly) {
  std::vector<float> zeros(kQKKv, 0.f), same(kQKKv, 1.5f);
  BlockKvInt8 bi;
  BlockKvFp8 bf;
  encode_block(zeros.data(), bi);
  encode_block(zeros.data(), bf);
  for (int i = 0; i < kQKKv; ++i) {
    EXPECT_EQ(element(&bi, i), 0.f);
    EXPECT_EQ(element(&bf, i), 0.f);
  }
  encode_block(same.data(), bi);
  encode_block(same.data(), bf);
  for (int i = 0; i < kQKKv; ++i) {
    EXPECT_EQ(element(&bi, i), 1.5f);
    EXPECT_NEAR(element(&bf, i), 1.5f, 1.5f / 16);
  }
}

TEST(KvBlocks, Q4_1EncoderIsGgmlsRule) {
  for (uint32_t seed = 0; seed < 50; ++seed) {
    const std::vector<float> x = random_row(kQK4_1, 1.f + seed * 0.1f, seed + 10);
    BlockQ4_1 mine, ref;
    encode_block(x.data(), mine);
    quantize_row(DType::Q4_1, x.data(), &ref, kQK4_1);
    ASSERT_EQ(std::memcmp(&mine, &ref, sizeof(ref)), 0) << seed;
    float y[kQK4_1];
    dequantize_row(DType::Q4_1, &ref, y, kQK4_1);
    for (int i = 0; i < kQK4_1; ++i) ASSERT_EQ(element(&mine, i), y[i]);
  }
}

TEST(KvBlocks, RowConversionsUseTheBlockCodecs) {
  const std::vector<float> x = random_row(2 * kQKKv, 1.f, 5);
  for (DType t : {DType::KV_FP8, DType::KV_INT8}) {
    std::vector<uint8_t> row(row_bytes(t, 2 * kQKKv));
    quantize_row(t, x.data(), row.data(), 2 * kQKKv);
    std::vector<float> y(2 * kQKKv);
    dequantize_row(t, row.data(), y.data(), 2 * kQKKv);
    visit_kv_block(t, [&]<class Block>(const Block*) {
      const auto* blocks = reinterpret_cast<const Block*>(row.data());
      for (int i = 0; i < 2 * kQKKv; ++i) ASSERT_EQ(y[i], element(blocks, i)) << dtype_name(t);
      Block b;
      encode_block(x.data() + kQKKv, b);
      EXPECT_EQ(std::memcmp(&b, &blocks[1], sizeof(Block)), 0);
    });
  }
  EXPECT_EQ(row_bytes(DType::KV_FP8, 128), 2 * sizeof(BlockKvFp8));
  EXPECT_EQ(row_bytes(DType::KV_INT8, 128), 2 * sizeof(BlockKvInt8));
}

}  // namespace
}  // namespace kestrel::quant
