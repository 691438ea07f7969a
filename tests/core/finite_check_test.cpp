// The load-time NaN/Inf scan: every float type element by element (finite extremes pass), every block
// type by each of its scales, unaligned data, and the parallel scan's choice of the first hit.
#include "core/finite_check.h"

#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/dequant.h"
#include "core/half.h"
#include "core/quant_blocks.h"
#include "core/thread_pool.h"

namespace kestrel {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNan = std::numeric_limits<float>::quiet_NaN();

// Finite values at the edges of every float format: the largest, the smallest subnormal, -0.
std::vector<float> edge_values(int64_t n) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(i % 7) - 3.f;
  v[1] = 65504.f;  // largest f16
  v[2] = -0.f;
  v[3] = 5.96e-8f;  // smallest f16 subnormal
  return v;
}

TEST(FiniteCheck, FloatTypesElementByElement) {
  const int64_t n = 10000;  // over two of the scan's 4096-element steps
  for (DType t : {DType::F32, DType::F16, DType::BF16}) {
    SCOPED_TRACE(dtype_name(t));
    std::vector<float> v = edge_values(n);
    // The largest finite value of the type (f32's would round to infinity in f16 and bf16).
    v[4] = t == DType::F32 ? std::numeric_limits<float>::max() : t == DType::BF16 ? bf16_to_f32(0x7f7f) : 65504.f;
    // One spare leading byte, so the data is not aligned to its element size (as in safetensors).
    std::vector<uint8_t> buf(1 + row_bytes(t, n));
    uint8_t* data = buf.data() + 1;
    std::vector<uint8_t> aligned(row_bytes(t, n));
    auto store = [&] {
      quantize_row(t, v.data(), aligned.data(), n);
      std::memcpy(data, aligned.data(), aligned.size());
    };
    store();
    EXPECT_EQ(find_non_finite(t, data, 0, n), -1);
    for (float bad : {kNan, kInf, -kInf})
      for (int64_t at : {int64_t{0}, int64_t{4095}, int64_t{4096}, n - 1}) {
        const float keep = v[at];
        v[at] = bad;
        store();
        EXPECT_EQ(find_non_finite(t, data, 0, n), at) << bad << " at " << at;
        EXPECT_EQ(find_non_finite(t, data, at + 1, n), -1) << "the range excludes it";
        v[at] = keep;
      }
  }
  const int32_t ints[3] = {-1, 0x7f800000, 0x7fffffff};  // NaN bit patterns mean nothing for integers
  EXPECT_EQ(find_non_finite(DType::I32, ints, 0, 3), -1);
}

// Blocks with random bytes and finite scales (every bit pattern of the other fields is a valid block).
std::vector<uint8_t> random_blocks(DType t, int64_t n_blocks, std::mt19937& rng) {
  std::vector<uint8_t> b(n_blocks * dtype_info(t).block_bytes);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

TEST(FiniteCheck, BlockTypesByEachScale) {
  using namespace quant;
  struct Scale {
    DType t;
    size_t offset;
    bool f32;
  };
  const Scale scales[] = {
      {DType::Q4_0, offsetof(BlockQ4_0, d), false},    {DType::Q4_1, offsetof(BlockQ4_1, d), false},
      {DType::Q4_1, offsetof(BlockQ4_1, m), false},    {DType::Q8_0, offsetof(BlockQ8_0, d), false},
      {DType::Q8_1, offsetof(BlockQ8_1, d), false},    {DType::Q8_1, offsetof(BlockQ8_1, s), false},
      {DType::Q4_K, offsetof(BlockQ4_K, d), false},    {DType::Q4_K, offsetof(BlockQ4_K, dmin), false},
      {DType::Q6_K, offsetof(BlockQ6_K, d), false},    {DType::Q8_K, offsetof(BlockQ8_K, d), true},
      {DType::Q5_0, offsetof(BlockQ5_0, d), false},    {DType::Q5_1, offsetof(BlockQ5_1, d), false},
      {DType::Q5_1, offsetof(BlockQ5_1, m), false},    {DType::Q2_K, offsetof(BlockQ2_K, d), false},
      {DType::Q2_K, offsetof(BlockQ2_K, dmin), false}, {DType::Q3_K, offsetof(BlockQ3_K, d), false},
      {DType::Q5_K, offsetof(BlockQ5_K, d), false},    {DType::Q5_K, offsetof(BlockQ5_K, dmin), false},
  };
  std::mt19937 rng(3);
  const int64_t n_blocks = 9;
  for (const Scale& s : scales) {
    SCOPED_TRACE(std::string(dtype_name(s.t)) + " scale at byte " + std::to_string(s.offset));
    const DTypeInfo& info = dtype_info(s.t);
    std::vector<uint8_t> b = random_blocks(s.t, n_blocks, rng);
    auto put = [&](int64_t block, const Scale& field, float value) {
      uint8_t* at = b.data() + block * info.block_bytes + field.offset;
      const uint16_t h = f32_to_f16(value);
      if (field.f32)
        std::memcpy(at, &value, 4);
      else
        std::memcpy(at, &h, 2);
    };
    for (const Scale& other : scales)  // every scale of the type finite, the largest f16 included
      if (other.t == s.t)
        for (int64_t k = 0; k < n_blocks; ++k) put(k, other, 65504.f);
    const int64_t n = n_blocks * info.block_size;
    EXPECT_EQ(find_non_finite(s.t, b.data(), 0, n), -1);
    put(5, s, kNan);
    EXPECT_EQ(find_non_finite(s.t, b.data(), 0, n), 5 * info.block_size);
    EXPECT_EQ(find_non_finite(s.t, b.data(), 6 * info.block_size, n), -1);
    put(2, s, -kInf);
    EXPECT_EQ(find_non_finite(s.t, b.data(), 0, n), 2 * info.block_size);
  }
}

TEST(FiniteCheck, ParallelScanReportsTheFirstHitInListOrder) {
  ThreadPool pool(2);
  // Several 1 MiB pieces each, so hits land in pieces that different threads scan.
  std::vector<std::vector<float>> data(3, std::vector<float>(700000, 1.f));
  std::vector<Tensor> tensors;
  for (auto& d : data) {
    Tensor t;
    t.dtype = DType::F32;
    t.shape = {700, 1000};
    t.data = d.data();
    tensors.push_back(t);
  }
  std::vector<const Tensor*> list = {&tensors[0], &tensors[1], &tensors[2]};
  EXPECT_FALSE(find_non_finite(list, pool).has_value());
  data[2][10] = kNan;
  data[1][650000] = kInf;
  auto hit = find_non_finite(list, pool);
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->tensor, 1u);
  EXPECT_EQ(hit->element, 650000);
  data[1][300000] = -kInf;
  hit = find_non_finite(list, pool);
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->element, 300000);
}

}  // namespace
}  // namespace kestrel
