// convert_rows against the reference (dequantize_row then quantize_row), bit for bit: every f16 value on
// the direct f16 -> bf16 path, f32 edge cases (NaN, infinities, subnormals, ties) on f32 -> bf16, and the
// paths through f32 for quantized sources.
#include "core/convert.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/dequant.h"
#include "core/error.h"

namespace kestrel {
namespace {

std::vector<uint8_t> reference(DType from, const void* src, DType to, int64_t rows, int64_t cols) {
  std::vector<uint8_t> out(rows * row_bytes(to, cols));
  std::vector<float> row(cols);
  for (int64_t r = 0; r < rows; ++r) {
    dequantize_row(from, static_cast<const char*>(src) + r * row_bytes(from, cols), row.data(), cols);
    quantize_row(to, row.data(), out.data() + r * row_bytes(to, cols), cols);
  }
  return out;
}

std::vector<uint8_t> converted(DType from, const void* src, DType to, int64_t rows, int64_t cols) {
  std::vector<uint8_t> out(rows * row_bytes(to, cols));
  convert_rows(from, src, to, out.data(), rows, cols);
  return out;
}

TEST(ConvertRows, EveryF16ValueToBf16MatchesTheReference) {
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  EXPECT_EQ(converted(DType::F16, all.data(), DType::BF16, 256, 256),
            reference(DType::F16, all.data(), DType::BF16, 256, 256));
}

TEST(ConvertRows, F32ToBf16MatchesTheReference) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(64 * 48);
  for (float& v : x) v = nd(rng);
  const float inf = std::numeric_limits<float>::infinity();
  const float specials[] = {0.f,
                            -0.f,
                            inf,
                            -inf,
                            std::numeric_limits<float>::quiet_NaN(),
                            -std::numeric_limits<float>::signaling_NaN(),
                            std::numeric_limits<float>::denorm_min(),
                            1.00390625f /* a tie: rounds to even */,
                            1.01171875f,
                            3.4e38f};
  std::memcpy(x.data(), specials, sizeof(specials));
  EXPECT_EQ(converted(DType::F32, x.data(), DType::BF16, 64, 48), reference(DType::F32, x.data(), DType::BF16, 64, 48));
}

TEST(ConvertRows, QuantizedAndOtherPathsMatchTheReference) {
  std::mt19937 rng(4);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int64_t rows = 3, cols = 256;
  std::vector<float> x(rows * cols);
  for (float& v : x) v = nd(rng);
  for (DType from : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1}) {
    std::vector<uint8_t> src = converted(DType::F32, x.data(), from, rows, cols);
    for (DType to : {DType::F32, DType::F16, DType::BF16, DType::Q8_0}) {
      SCOPED_TRACE(fmt::format("{} -> {}", dtype_name(from), dtype_name(to)));
      EXPECT_EQ(converted(from, src.data(), to, rows, cols), reference(from, src.data(), to, rows, cols));
    }
  }
}

TEST(ConvertRows, SameTypeIsACopyAndBadRowsThrow) {
  std::vector<uint8_t> q(2 * row_bytes(DType::Q4_K, 256));
  for (size_t i = 0; i < q.size(); ++i) q[i] = static_cast<uint8_t>(i * 7);
  EXPECT_EQ(converted(DType::Q4_K, q.data(), DType::Q4_K, 2, 256), q);
  std::vector<float> x(256, 1.f);
  std::vector<uint8_t> out(row_bytes(DType::Q4_K, 256));
  EXPECT_THROW(convert_rows(DType::F32, x.data(), DType::Q8_0, out.data(), 1, 16), Error);  // not whole blocks
  EXPECT_THROW(convert_rows(DType::F32, x.data(), DType::I32, out.data(), 1, 16), Error);   // no conversion
}

}  // namespace
}  // namespace kestrel
