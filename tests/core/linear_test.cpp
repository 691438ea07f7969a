// The linear operand (core/linear.h) and its integer codes (core/int_codes.h): code rows pack and unpack
// as bit streams, grouped and W8A8 linears decode as their formats define, and inconsistent parts are
// refused.
#include "core/linear.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "../common/random_weights.h"
#include "core/error.h"
#include "core/half.h"
#include "core/int_codes.h"
#include "core/w8a8.h"

namespace kestrel {
namespace {

TEST(IntCodes, RowsAreLittleEndianBitStreams) {
  // Code k at bits b*k .. b*k + b - 1: the 3-bit codes 1..8 (mod 8) cross byte boundaries.
  const uint8_t codes[8] = {1, 2, 3, 4, 5, 6, 7, 0};
  uint8_t row[3];
  pack_codes(DType::U3, codes, 8, row);
  uint32_t stream = row[0] | row[1] << 8 | row[2] << 16;
  for (int k = 0; k < 8; ++k) EXPECT_EQ((stream >> (3 * k)) & 7, codes[k]) << k;
  const uint8_t nibbles[2] = {0x3, 0xA};
  pack_codes(DType::U4, nibbles, 2, row);
  EXPECT_EQ(row[0], 0xA3);  // element 2j in the low nibble, as the KV pages' U4
  EXPECT_EQ(code_bits(DType::Q4_0), 0);
  EXPECT_EQ(code_type(3), DType::U3);
  EXPECT_FALSE(code_type(5).has_value());
}

TEST(IntCodes, PackUnpackAndCodeAtAgree) {
  std::mt19937 rng(3);
  for (DType t : {DType::U2, DType::U3, DType::U4, DType::U8}) {
    const int bits = code_bits(t);
    const int64_t n = 8 * 13;
    std::vector<uint8_t> codes(n), back(n), row(row_bytes(t, n));
    for (uint8_t& c : codes) c = static_cast<uint8_t>(rng() & ((1u << bits) - 1));
    pack_codes(t, codes.data(), n, row.data());
    unpack_codes(t, row.data(), n, back.data());
    EXPECT_EQ(back, codes) << dtype_name(t);
    for (int64_t k = 0; k < n; ++k) ASSERT_EQ(code_at(row.data(), bits, k), codes[k]) << dtype_name(t) << " " << k;
  }
  const uint8_t too_big = 4;
  uint8_t row[1];
  EXPECT_THROW(pack_codes(DType::U2, &too_big, 4, row), Error);
}

// The CUDA kernels' conversion of a word of codes (code_pair_f16): every pair of every code width that fits a
// word, with every code value (rows of codes 0..2^b-1 in turn), is 1024 + code exactly in each f16 half, and
// 1024 + code - (1024 + zero) is exactly code - zero for every zero point in [0, 2^b] (the kernels' f16
// subtraction).
TEST(IntCodes, PairsOfCodesBecomeExactF16) {
  for (DType t : {DType::U2, DType::U4, DType::U8}) {
    const int bits = code_bits(t);
    const int64_t n = 512;  // 2^b values several times over
    std::vector<uint8_t> codes(n), row(row_bytes(t, n));
    for (int64_t k = 0; k < n; ++k) codes[k] = static_cast<uint8_t>((k * 7 + k / 3) & ((1 << bits) - 1));
    pack_codes(t, codes.data(), n, row.data());
    const int per_word = 32 / bits, pairs = 16 / bits;
    for (int64_t w0 = 0; w0 < n; w0 += per_word) {
      uint32_t word = 0;
      std::memcpy(&word, row.data() + w0 * bits / 8, 4);
      for (int j = 0; j < pairs; ++j) {
        const uint32_t p = code_pair_f16(word, bits, j);
        const float lo = f16_to_f32(static_cast<uint16_t>(p & 0xffff)), hi = f16_to_f32(static_cast<uint16_t>(p >> 16));
        ASSERT_EQ(lo, 1024.f + codes[w0 + j]) << dtype_name(t) << " word at " << w0 << " pair " << j;
        ASSERT_EQ(hi, 1024.f + codes[w0 + j + pairs]) << dtype_name(t) << " word at " << w0 << " pair " << j;
        for (int z = 0; z <= (1 << bits); z += 1 + (1 << bits) / 8) {
          const float off = f16_to_f32(f32_to_f16(1024.f + static_cast<float>(z)));
          EXPECT_EQ(off, 1024.f + z);
          EXPECT_EQ(f16_to_f32(f32_to_f16(lo - off)), static_cast<float>(codes[w0 + j]) - z);
        }
      }
    }
  }
}

// The definition, element by element: (code - zero) * scale of the channel's group.
float defined(const Linear& w, int64_t n, int64_t k) {
  const int64_t G = w.n_groups();
  const int64_t g = w.groups.g_idx.empty() ? k / w.groups.group_size : w.groups.g_idx.ptr<int32_t>()[k];
  const float zero = w.groups.zeros.empty() ? static_cast<float>(1 << (w.bits() - 1))
                                            : f16_to_f32(w.groups.zeros.ptr<uint16_t>()[n * G + g]);
  const auto* row = static_cast<const uint8_t*>(w.weight.row(n));
  return (static_cast<float>(code_at(row, w.bits(), k)) - zero) *
         f16_to_f32(w.groups.scales.ptr<uint16_t>()[n * G + g]);
}

TEST(Linear, GroupedRowsDecodeAsTheFormatDefines) {
  std::mt19937 rng(5);
  for (DType t : {DType::U2, DType::U3, DType::U4, DType::U8})
    for (int64_t group : {32, 64, 200})  // K = 72 in groups of 32 or 64: the last one partial; 200: one group
      for (bool asym : {false, true})
        for (bool act_order : {false, true}) {
          const int64_t k = group == 200 ? 200 : 72;
          const Linear w = testing::random_grouped(t, 5, k, group, asym, act_order, rng);
          std::vector<float> row(k);
          for (int64_t n = 0; n < 5; ++n) {
            dequantize_row(w, n, row.data());
            for (int64_t i = 0; i < k; ++i) ASSERT_EQ(row[i], defined(w, n, i)) << w.describe() << " " << n << "," << i;
          }
        }
}

TEST(Linear, DescribesItsFormat) {
  std::mt19937 rng(7);
  EXPECT_EQ(testing::random_grouped(DType::U4, 3, 64, 32, true, true, rng).describe(), "u4[3, 64] g32 asym act-order");
  EXPECT_EQ(testing::random_grouped(DType::U3, 3, 64, 64, false, false, rng).describe(), "u3[3, 64] g64 sym");
  const Linear dense(Tensor::empty_host(DType::Q8_0, {2, 64}));
  EXPECT_TRUE(dense.dense());
  EXPECT_EQ(dense.describe(), "q8_0[2, 64]");
  EXPECT_EQ(dense.bits(), 0);
  EXPECT_EQ((LinearId{3, LinearRole::GateUp}).name(), "blk.3.ffn_gate_up");
  EXPECT_EQ(LinearId{}.name(), "output");
}

TEST(Linear, InconsistentPartsAreRefused) {
  // A code matrix alone is no operand: its codes mean nothing without the groups.
  EXPECT_THROW(Linear(Tensor::empty_host(DType::U4, {2, 64})), Error);
  auto groups = [](int64_t n, int64_t g) {
    IntGroups p;
    p.group_size = 32;
    p.scales = Tensor::empty_host(DType::F16, {n, g});
    return p;
  };
  const LinearId id{0, LinearRole::Q};
  const Tensor codes = Tensor::empty_host(DType::U4, {2, 64});
  EXPECT_NO_THROW(Linear::grouped(codes, groups(2, 2), id));
  EXPECT_THROW(Linear::grouped(codes, groups(2, 3), id), Error);                                    // groups vs K
  EXPECT_THROW(Linear::grouped(codes, groups(3, 2), id), Error);                                    // scales' rows
  EXPECT_THROW(Linear::grouped(Tensor::empty_host(DType::F16, {2, 64}), groups(2, 2), id), Error);  // not codes
  IntGroups zeros = groups(2, 2);
  zeros.zeros = Tensor::empty_host(DType::F16, {2, 1});
  EXPECT_THROW(Linear::grouped(codes, zeros, id), Error);
  IntGroups g_idx = groups(2, 2);
  g_idx.g_idx = Tensor::empty_host(DType::I32, {64});
  g_idx.g_idx.ptr<int32_t>()[9] = 2;  // only groups 0 and 1 exist
  try {
    Linear::grouped(codes, g_idx, id);
    ADD_FAILURE() << "g_idx out of range was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blk.0.attn_q: g_idx[9] = 2"), std::string::npos) << e.what();
  }
}

// W8A8 (core/w8a8.h): a row's largest value is a code's maximum exactly, each weight decodes within half a
// step of itself (int8) or within e4m3's relative rounding (fp8), and rows of zeros get scale 0.
TEST(Linear, W8A8RowsQuantizeAsTheFormatDefines) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.f, 0.02f);
  Tensor w = Tensor::empty_host(DType::F32, {3, 64});
  for (int64_t i = 0; i < w.numel(); ++i) w.ptr<float>()[i] = nd(rng);
  for (int64_t k = 0; k < 64; ++k) w.ptr<float>()[2 * 64 + k] = 0.f;
  for (DType t : {DType::I8, DType::F8E4M3}) {
    const bool fp8 = t == DType::F8E4M3;
    const W8Matrix q = quantize_w8_rows(w, t);
    const Linear l = Linear::scaled(q.codes, q.scales, {4, LinearRole::Down});
    EXPECT_EQ(l.describe(), fmt::format("{}[3, 64] w8a8", dtype_name(t)));
    EXPECT_EQ(l.bits(), 8);
    EXPECT_FALSE(l.dense());
    std::vector<float> row(64);
    for (int64_t n = 0; n < 3; ++n) {
      dequantize_row(l, n, row.data());
      const float scale = q.scales.ptr<float>()[n];
      float absmax = 0.f;
      for (int64_t k = 0; k < 64; ++k) absmax = std::max(absmax, std::fabs(w.ptr<float>()[n * 64 + k]));
      EXPECT_FLOAT_EQ(scale, absmax / w8_qmax(fp8)) << n;
      for (int64_t k = 0; k < 64; ++k) {
        const float want = w.ptr<float>()[n * 64 + k];
        const float tol = fp8 ? std::fabs(want) / 16.f + scale / 512.f : scale / 2.f;  // e4m3: 3 mantissa bits
        EXPECT_NEAR(row[k], want, tol * 1.0001f) << dtype_name(t) << " row " << n << " k " << k;
      }
    }
  }
  // The activation side: the same codes, times the row's scale.
  std::vector<float> x = {0.5f, -1.f, 0.25f, 2.f}, out(4);
  EXPECT_FLOAT_EQ(w8_fake_quantize_row(x.data(), 4, false, out.data()), 2.f / 127.f);
  EXPECT_FLOAT_EQ(out[3], 2.f);
  EXPECT_NEAR(out[0], 0.5f, 1.f / 127.f);
}

TEST(Linear, W8A8InconsistentPartsAreRefused) {
  const Tensor codes = Tensor::empty_host(DType::I8, {4, 32});
  EXPECT_THROW(Linear::scaled(codes, Tensor::empty_host(DType::F32, {3})), Error);  // one scale a row
  EXPECT_THROW(Linear::scaled(codes, Tensor::empty_host(DType::F16, {4})), Error);  // f32 scales
  EXPECT_THROW(Linear::scaled(Tensor::empty_host(DType::F32, {4, 32}), Tensor::empty_host(DType::F32, {4})),
               Error);  // not an 8-bit type
  EXPECT_THROW(quantize_w8_rows(Tensor::empty_host(DType::F32, {4, 32}), DType::U8), Error);
}

}  // namespace
}  // namespace kestrel
