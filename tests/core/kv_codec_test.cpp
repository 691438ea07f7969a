#include "core/kv_codec.h"

#include <gtest/gtest.h>

#include <algorithm>
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

TEST(KvCodec, E4m3DecodesEveryCodeAndRoundTrips) {
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

TEST(KvCodec, E4m3EncodeIsRoundToNearestEvenWithSaturation) {
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

TEST(KvCodec, HalfBitsMatchesTheCompilersConversion) {
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

// Encodes one group of n and checks every decoded element against the input (within `tol(x, scale)`),
// and that kv_decode8 and kv_decode agree.
template <KvCode C, class Tol>
void check_group(const std::vector<float>& x, Tol tol) {
  const int n = static_cast<int>(x.size());
  std::vector<uint8_t> codes(kv_row_bytes(C, n));
  uint16_t params[2];
  kv_encode_group<C>(x.data(), n, codes.data(), params);
  const float d = half_value(params[0]);
  float w[kGroup];
  for (int i0 = 0; i0 < n; i0 += kGroup) {
    kv_decode8<C>(codes.data(), params, i0, w);
    for (int i = 0; i < kGroup; ++i) {
      EXPECT_LE(std::fabs(w[i] - x[i0 + i]), tol(x[i0 + i], d)) << i0 + i;
      EXPECT_EQ(w[i], kv_decode<C>(codes.data(), params, i0 + i));
    }
  }
}

TEST(KvCodec, U8ErrorIsHalfAStep) {
  for (int n : {32, 64})
    check_group<KvCode::U8>(random_row(n, 2.f, n), [](float, float d) { return 0.5f * d + 2e-3f; });
}

TEST(KvCodec, U4ErrorIsHalfAStep) {
  for (int n : {32, 64})
    check_group<KvCode::U4>(random_row(n, 2.f, n + 1), [](float, float d) { return 0.5f * d + 2e-2f; });
}

TEST(KvCodec, Fp8ErrorIsRelative) {
  // 3 mantissa bits: half an ulp is 1/16 relative; below 2^-6 * d the subnormal step 2^-9 * d rules.
  check_group<KvCode::Fp8>(random_row(64, 3.f, 2), [](float v, float d) {
    return std::max(std::fabs(v) / 16.f, d * std::ldexp(1.f, -10)) * 1.01f;
  });
}

TEST(KvCodec, ConstantAndZeroGroupsDecodeExactly) {
  const std::vector<float> zeros(64, 0.f), same(64, 1.5f);
  uint8_t codes[64];
  uint16_t params[2];
  for (int i = 0; i < 2; ++i) {
    const std::vector<float>& x = i ? same : zeros;
    kv_encode_group<KvCode::U8>(x.data(), 64, codes, params);
    for (int j = 0; j < 64; ++j) EXPECT_EQ(kv_decode<KvCode::U8>(codes, params, j), x[j]);
    kv_encode_group<KvCode::U4>(x.data(), 64, codes, params);
    for (int j = 0; j < 64; ++j) EXPECT_EQ(kv_decode<KvCode::U4>(codes, params, j), x[j]);
    kv_encode_group<KvCode::Fp8>(x.data(), 64, codes, params);
    for (int j = 0; j < 64; ++j) EXPECT_NEAR(kv_decode<KvCode::Fp8>(codes, params, j), x[j], x[j] / 16);
  }
}

TEST(KvCodec, U4PacksElementPairsLowNibbleFirst) {
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[i] = static_cast<float>(i % 16);  // codes equal the values: d = 1, m = 0
  uint8_t codes[16];
  uint16_t params[2];
  kv_encode_group<KvCode::U4>(x.data(), 32, codes, params);
  EXPECT_EQ(half_value(params[0]), 1.f);
  EXPECT_EQ(half_value(params[1]), 0.f);
  EXPECT_EQ(codes[0], 0x10);
  EXPECT_EQ(codes[7], 0xfe);
  EXPECT_EQ(codes[8], 0x10);
}

TEST(KvCodec, U2ErrorIsHalfAStepAndTernaryUsesThreeCodes) {
  check_group<KvCode::U2>(random_row(64, 2.f, 5), [](float, float d) { return 0.5f * d + 2e-2f; });
  // SKVQ's ternary values: the same 2-bit slots, codes 0..2 only, the step half the range.
  const std::vector<float> x = random_row(64, 2.f, 6);
  std::vector<uint8_t> codes(16);
  uint16_t params[2];
  kv_encode_group<KvCode::U2>(x.data(), 64, codes.data(), params, /*qmax=*/2);
  const float lo = *std::min_element(x.begin(), x.end()), hi = *std::max_element(x.begin(), x.end());
  EXPECT_NEAR(half_value(params[0]), (hi - lo) / 2, (hi - lo) * 1e-3f);
  for (int i = 0; i < 64; ++i) {
    EXPECT_LE(kv_code_value<KvCode::U2>(codes.data(), i), 2.f);
    EXPECT_LE(std::fabs(kv_decode<KvCode::U2>(codes.data(), params, i) - x[i]), 0.5f * half_value(params[0]) + 2e-2f);
  }
}

TEST(KvCodec, U2PacksFourElementsLowBitsFirst) {
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[i] = static_cast<float>(i % 4);  // d = 1, m = 0
  uint8_t codes[8];
  uint16_t params[2];
  kv_encode_group<KvCode::U2>(x.data(), 32, codes, params);
  EXPECT_EQ(codes[0], 0xe4);  // 3 2 1 0 from the high bits down
  EXPECT_EQ(kv_row_bytes(KvCode::U2, 32), 8);
}

TEST(KvCodec, ClipNarrowsTheRangeAboutItsCentreAndSaturates) {
  std::vector<float> x(32, 0.f);
  x[0] = -1.f;
  x[1] = 3.f;  // range [-1, 3], centre 1: clip 0.5 gives [0, 2]
  uint8_t codes[16];
  uint16_t params[2];
  kv_encode_group<KvCode::U4>(x.data(), 32, codes, params, 0, 0.5f);
  EXPECT_FLOAT_EQ(half_value(params[1]), 0.f);
  EXPECT_NEAR(half_value(params[0]), 2.f / 15, 1e-3);
  EXPECT_EQ(kv_decode<KvCode::U4>(codes, params, 0), 0.f);          // -1 saturates at the min
  EXPECT_NEAR(kv_decode<KvCode::U4>(codes, params, 1), 2.f, 2e-3);  // 3 at the max
  // Without a clip the codes are the plain ones.
  uint8_t plain[16], same[16];
  uint16_t p1[2], p2[2];
  kv_encode_group<KvCode::U4>(x.data(), 32, plain, p1);
  kv_encode_group<KvCode::U4>(x.data(), 32, same, p2, 15, 1.f);
  EXPECT_EQ(std::vector<uint8_t>(plain, plain + 16), std::vector<uint8_t>(same, same + 16));
}

// KIVI's per-channel groups: `tokens` rows of a head's `channels`, read from rows of a wider tensor (the
// other heads' channels sit between) into code rows with padding after each. Channels have their own
// spreads and offsets, channel 3 is an outlier and channel 5 is constant.
template <KvCode C>
void check_channels(int tokens, int channels, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int stride = channels + 8;
  std::vector<float> x(static_cast<size_t>(tokens * stride), 1e9f);  // the other heads' channels: never read
  for (int t = 0; t < tokens; ++t)
    for (int i = 0; i < channels; ++i)
      x[t * stride + i] = i == 5 ? 0.75f : nd(rng) * (i == 3 ? 40.f : 1.f + i % 5) + 0.1f * i;
  const int64_t rb = kv_row_bytes(C, channels), code_stride = rb + 4;
  std::vector<uint8_t> codes(static_cast<size_t>(tokens * code_stride), 0xAA);
  std::vector<uint16_t> params(2 * channels);
  kv_encode_channels<C>(x.data(), stride, tokens, channels, codes.data(), code_stride, params.data());
  const float kMax = static_cast<float>(kv_code_max(C));
  std::vector<float> y(static_cast<size_t>(tokens * channels));
  for (int i = 0; i < channels; ++i) {
    float lo = x[i], hi = x[i];
    for (int t = 1; t < tokens; ++t) lo = std::min(lo, x[t * stride + i]), hi = std::max(hi, x[t * stride + i]);
    const float d = half_value(params[2 * i]), mag = std::max(std::fabs(lo), std::fabs(hi));
    EXPECT_NEAR(d, (hi - lo) / kMax, 1e-3f * mag) << i;
    EXPECT_NEAR(half_value(params[2 * i + 1]), lo, 1e-3f * mag) << i;
    for (int t = 0; t < tokens; ++t) {
      const float v = kv_decode<C>(codes.data() + t * code_stride, params.data() + 2 * i, i);
      EXPECT_LE(std::fabs(v - x[t * stride + i]), 0.5f * d + 2e-3f * mag) << t << " " << i;
      if (i == 5) EXPECT_EQ(v, 0.75f);  // a constant channel decodes exactly
      y[t * channels + i] = v;
    }
  }
  for (int t = 0; t < tokens; ++t)
    for (int64_t j = rb; j < code_stride; ++j) EXPECT_EQ(codes[t * code_stride + j], 0xAA) << "padding of row " << t;
  // Each channel's step is its own: the outlier does not coarsen its neighbours.
  EXPECT_GT(half_value(params[2 * 3]), 8 * half_value(params[2 * 2]));
  // Encoding the decoded rows again gives the same bytes: codes and params.
  std::vector<uint8_t> again(codes.size(), 0xAA);
  std::vector<uint16_t> params_again(params.size());
  kv_encode_channels<C>(y.data(), channels, tokens, channels, again.data(), code_stride, params_again.data());
  EXPECT_EQ(again, codes);
  EXPECT_EQ(params_again, params);
}

TEST(KvCodec, ChannelGroupsRoundTripWithinTheirOwnStep) {
  check_channels<KvCode::U2>(32, 64, 11);   // kivi2 on a head of 64
  check_channels<KvCode::U2>(32, 256, 12);  // Gemma 3's heads
  check_channels<KvCode::U4>(32, 128, 13);  // kivi4
  check_channels<KvCode::U8>(16, 64, 14);
}

TEST(KvCodec, ChannelGroupsPackRowsAsTheRowCodecDoes) {
  // Channel i of every token holds the values 0..3 over the tokens: d = 1, m = 0, so codes are the values.
  constexpr int kTokens = 4, kChannels = 8;
  std::vector<float> x(kTokens * kChannels);
  for (int t = 0; t < kTokens; ++t)
    for (int i = 0; i < kChannels; ++i) x[t * kChannels + i] = static_cast<float>((t + i) % 4);
  uint8_t codes[kTokens * 2];
  uint16_t params[2 * kChannels];
  kv_encode_channels<KvCode::U2>(x.data(), kChannels, kTokens, kChannels, codes, 2, params);
  for (int t = 0; t < kTokens; ++t) {
    uint8_t row[2];
    uint16_t row_params[2];
    kv_encode_group<KvCode::U2>(x.data() + t * kChannels, kChannels, row, row_params);  // range 0..3 in every row
    EXPECT_EQ(codes[2 * t], row[0]) << t;
    EXPECT_EQ(codes[2 * t + 1], row[1]) << t;
  }
  for (int i = 0; i < kChannels; ++i) {
    EXPECT_EQ(half_value(params[2 * i]), 1.f);
    EXPECT_EQ(half_value(params[2 * i + 1]), 0.f);
  }
}

TEST(KvCodec, CodeTypesDequantizeToTheirCodes) {
  const uint8_t bytes[4] = {0x38, 0x00, 0xff, 0x21};
  float y[8];
  dequantize_row(DType::U8, bytes, y, 4);
  EXPECT_EQ(y[2], 255.f);
  dequantize_row(DType::U4, bytes, y, 8);
  EXPECT_EQ(y[0], 8.f);
  EXPECT_EQ(y[1], 3.f);
  EXPECT_EQ(y[6], 1.f);
  EXPECT_EQ(y[7], 2.f);
  dequantize_row(DType::F8E4M3, bytes, y, 4);
  EXPECT_EQ(y[0], 1.f);
  EXPECT_EQ(row_bytes(DType::U4, 128), 64u);
  dequantize_row(DType::U2, bytes, y, 8);  // 0x38: 0, 2, 3, 0
  EXPECT_EQ(y[1], 2.f);
  EXPECT_EQ(y[2], 3.f);
  EXPECT_EQ(row_bytes(DType::U2, 128), 32u);
}

}  // namespace
}  // namespace kestrel::quant
