#include "core/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/dequant.h"
#include "core/error.h"
#include "core/half.h"

namespace kestrel {

TEST(DType, RowBytesMatchesGgmlBlockSizes) {
  EXPECT_EQ(row_bytes(DType::Q4_1, 576), 576 / 32 * 20u);
  EXPECT_EQ(row_bytes(DType::Q6_K, 512), 2 * 210u);
  EXPECT_EQ(row_bytes(DType::Q5_0, 64), 2 * 22u);
  EXPECT_EQ(row_bytes(DType::Q5_1, 64), 2 * 24u);
  EXPECT_EQ(row_bytes(DType::Q2_K, 256), 84u);
  EXPECT_EQ(row_bytes(DType::Q3_K, 256), 110u);
  EXPECT_EQ(row_bytes(DType::Q5_K, 256), 176u);
  EXPECT_THROW(row_bytes(DType::Q4_0, 33), Error);
}

TEST(DType, GgmlIdsRoundTrip) {
  for (auto t : {DType::F32, DType::F16, DType::BF16, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0,
                 DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K})
    EXPECT_EQ(dtype_from_ggml(dtype_to_ggml(t)), t);
  EXPECT_EQ(dtype_to_ggml(DType::Q5_0), 6u);  // ggml's numbering
  EXPECT_EQ(dtype_to_ggml(DType::Q2_K), 10u);
  EXPECT_EQ(dtype_to_ggml(DType::Q5_K), 13u);
  EXPECT_FALSE(dtype_from_ggml(9999).has_value());
}

TEST(Dequant, Q8_0RoundTripIsClose) {
  float x[64], y[64];
  for (int i = 0; i < 64; ++i) x[i] = (i - 30) * 0.1f;
  uint8_t buf[2 * 34];
  quantize_row(DType::Q8_0, x, buf, 64);
  dequantize_row(DType::Q8_0, buf, y, 64);
  // Round to nearest on each block's grid of step d: off by at most half a step.
  for (int i = 0; i < 64; ++i) {
    uint16_t d;
    std::memcpy(&d, buf + (i / 32) * 34, 2);
    EXPECT_LE(std::fabs(x[i] - y[i]), f16_to_f32(d) / 2 * 1.0001f) << i;
  }
}

// Values on a 5-bit grid whose step and offset f16 holds exactly come back exactly; the fifth bit of
// every element is exercised (q covers 0..31 in each block).
TEST(Dequant, Q5RoundTripsItsGridExactly) {
  float x[64], y[64];
  for (int i = 0; i < 64; ++i) x[i] = static_cast<float>((i * 7) % 32 - 16) * 0.125f;  // Q5_0: (q - 16) d
  uint8_t buf[2 * 24];
  quantize_row(DType::Q5_0, x, buf, 64);
  dequantize_row(DType::Q5_0, buf, y, 64);
  for (int i = 0; i < 64; ++i) EXPECT_EQ(x[i], y[i]) << "q5_0 element " << i;
  for (int i = 0; i < 64; ++i) x[i] = -1.5f + static_cast<float>((i * 7) % 32) * 0.125f;  // Q5_1: q d + m
  quantize_row(DType::Q5_1, x, buf, 64);
  dequantize_row(DType::Q5_1, buf, y, 64);
  for (int i = 0; i < 64; ++i) EXPECT_EQ(x[i], y[i]) << "q5_1 element " << i;
}

}  // namespace kestrel
