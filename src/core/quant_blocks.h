// Block layouts of the GGUF quantized types, byte-identical to ggml's so file data is used in place.
// Element order within a block follows ggml (see dequantize_row in dequant.cpp for the exact mapping).
#pragma once

#include <cstdint>

namespace kestrel::quant {

constexpr int kQK4_0 = 32;
constexpr int kQK4_1 = 32;
constexpr int kQK8_0 = 32;
constexpr int kQK8_1 = 32;
constexpr int kQK_K = 256;
constexpr int kKScaleBytes = 12;

// x[i] = (q[i] - 8) * d; q[i] = qs[i] & 15 for i < 16, qs[i-16] >> 4 otherwise.
struct BlockQ4_0 {
  uint16_t d;  // f16
  uint8_t qs[kQK4_0 / 2];
};
// x[i] = q[i] * d + m, same nibble order as Q4_0.
struct BlockQ4_1 {
  uint16_t d;  // f16
  uint16_t m;  // f16
  uint8_t qs[kQK4_1 / 2];
};
// x[i] = qs[i] * d
struct BlockQ8_0 {
  uint16_t d;  // f16
  int8_t qs[kQK8_0];
};
// Activation partner of Q4_0/Q4_1: s = d * sum(qs).
struct BlockQ8_1 {
  uint16_t d;  // f16
  uint16_t s;  // f16
  int8_t qs[kQK8_1];
};
// 8 sub-blocks of 32; 6-bit scales and mins packed in `scales`; x = d*sc*q - dmin*m.
struct BlockQ4_K {
  uint16_t d;     // f16 super-block scale for the sub-block scales
  uint16_t dmin;  // f16 super-block scale for the sub-block mins
  uint8_t scales[kKScaleBytes];
  uint8_t qs[kQK_K / 2];
};
// 16 sub-blocks of 16; x = d * scales[sub] * (q - 32), q = 4 low bits from ql | 2 high bits from qh.
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  uint16_t d;  // f16
};
// Activation partner of the K-quants: float scale, int8 values, sums of each 16 values.
struct BlockQ8_K {
  float d;
  int8_t qs[kQK_K];
  int16_t bsums[kQK_K / 16];
};

static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ8_1) == 36);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ6_K) == 210);
static_assert(sizeof(BlockQ8_K) == 292);

// Unpacks the 6-bit scale and min of sub-block j (0..7) of a Q4_K block.
inline void q4k_scale_min(int j, const uint8_t* q, uint8_t& sc, uint8_t& m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

}  // namespace kestrel::quant
