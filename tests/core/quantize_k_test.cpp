// The K-quant quantizers (core/quantize_k.h): their blocks decode (with the shared decoders) close to the
// input, closer than the 32-element type of the same bits, and edge cases (zeros, one sign, one spike) stay
// finite and exact where they can be.
#include "core/quantize_k.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/dequant.h"
#include "core/dtype.h"

namespace kestrel {
namespace {

// NMSE of x through type t and back.
double round_trip_nmse(DType t, const std::vector<float>& x) {
  std::vector<uint8_t> q(row_bytes(t, static_cast<int64_t>(x.size())));
  std::vector<float> y(x.size());
  quantize_row(t, x.data(), q.data(), static_cast<int64_t>(x.size()));
  dequantize_row(t, q.data(), y.data(), static_cast<int64_t>(x.size()));
  double err = 0, ref = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_TRUE(std::isfinite(y[i]));
    err += (y[i] - x[i]) * double(y[i] - x[i]), ref += x[i] * double(x[i]);
  }
  return ref > 0 ? err / ref : err;
}

std::vector<float> gaussian(size_t n, uint32_t seed, float mean = 0.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(mean, 1.f);
  std::vector<float> x(n);
  for (float& v : x) v = g(rng);
  return x;
}

// Expected for Gaussian weights: a uniform rounding error of step^2 / 12 with the step a sub-block's range
// over its levels (~4 sigma / 15 for Q4_K: ~0.006; / 31 for Q5_K: ~0.0015; Q6_K's 16-element magnitude /
// 32: ~0.0003), plus what rounding the scales costs, less what the fitted scales save. Measured 0.0054,
// 0.0013, 0.00036 (Q4_0 0.0075, Q4_1 0.0062, Q5_1 0.0015); the bounds leave ~1.8x. The 32-element types of
// the same bits, with a scale (and minimum) per 32 in f16 but the full range, are worse.
TEST(QuantizeK, GaussianRoundTripsWithinTheRoundingNoise) {
  const auto x = gaussian(256 * 64, 1);
  const double q4k = round_trip_nmse(DType::Q4_K, x), q5k = round_trip_nmse(DType::Q5_K, x),
               q6k = round_trip_nmse(DType::Q6_K, x);
  EXPECT_LT(q4k, 0.01);
  EXPECT_LT(q5k, 0.0025);
  EXPECT_LT(q6k, 0.0006);
  EXPECT_LT(q4k, round_trip_nmse(DType::Q4_1, x));
  EXPECT_LT(q5k, round_trip_nmse(DType::Q5_1, x));
  EXPECT_LT(q6k, q5k);
  EXPECT_LT(q5k, q4k);
  // Two and three bits: 4 levels over a 16-weight range (~3.5 sigma / 3: ~0.1 before the fit; measured
  // 0.074) and 8 symmetric levels over the largest magnitude (~2 sigma / 4: ~0.02; measured 0.024).
  const double q2k = round_trip_nmse(DType::Q2_K, x), q3k = round_trip_nmse(DType::Q3_K, x);
  EXPECT_LT(q2k, 0.11);
  EXPECT_LT(q3k, 0.035);
  EXPECT_LT(q4k, q3k);
  EXPECT_LT(q3k, q2k);
}

// A shifted distribution is what the minimum of Q4_K/Q5_K is for: it beats the symmetric Q4_0 by far.
TEST(QuantizeK, MinimumsFollowAnOffset) {
  const auto x = gaussian(256 * 16, 2, 3.f);
  EXPECT_LT(round_trip_nmse(DType::Q4_K, x), 0.5 * round_trip_nmse(DType::Q4_0, x));
  EXPECT_LT(round_trip_nmse(DType::Q5_K, x), 0.5 * round_trip_nmse(DType::Q5_0, x));
}

TEST(QuantizeK, ZerosSpikesAndOneSignedRowsStayExactOrClose) {
  for (DType t : {DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
    SCOPED_TRACE(dtype_name(t));
    std::vector<float> zeros(512, 0.f);
    EXPECT_EQ(round_trip_nmse(t, zeros), 0.0);
    std::vector<float> spike(256, 0.f);
    spike[77] = 5.f;  // one weight carries the block: it must come back, the rest stay zero
    std::vector<uint8_t> q(row_bytes(t, 256));
    std::vector<float> y(256);
    quantize_row(t, spike.data(), q.data(), 256);
    dequantize_row(t, q.data(), y.data(), 256);
    EXPECT_NEAR(y[77], 5.f, 0.05f);
    for (int i = 0; i < 256; ++i)
      if (i != 77) EXPECT_NEAR(y[i], 0.f, 1e-3f) << i;
    auto positive = gaussian(256 * 4, 3);
    for (float& v : positive) v = std::fabs(v);
    // One-signed weights (|gaussian|): the types with a minimum fit the range (measured Q2_K 0.034, Q4_K
    // 0.0020, Q5_K 0.0005), the symmetric Q3_K and Q6_K waste the negative half (0.023, 0.00035); ~1.6x.
    const double bound = t == DType::Q2_K   ? 0.055
                         : t == DType::Q3_K ? 0.037
                         : t == DType::Q4_K ? 0.0033
                         : t == DType::Q5_K ? 0.0008
                                            : 0.0006;
    EXPECT_LT(round_trip_nmse(t, positive), bound);
  }
}

}  // namespace
}  // namespace kestrel
