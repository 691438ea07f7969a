// Block layouts of the GGUF quantized types, byte-identical to ggml's so file data is used in place.
// Element order within a block follows ggml (see dequantize_row in dequant.cpp for the exact mapping).
#pragma once

#include <cstdint>

#include "core/host_device.h"

namespace kestrel::quant {

constexpr int kQK4_0 = 32;
constexpr int kQK4_1 = 32;
constexpr int kQK8_0 = 32;
constexpr int kQK8_1 = 32;
constexpr int kQK5_0 = 32;
constexpr int kQK5_1 = 32;
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
// x[i] = (q[i] - 16) * d, q[i] = nibble (Q4_0's order) | bit i of qh << 4.
struct BlockQ5_0 {
  uint16_t d;  // f16
  uint8_t qh[4];
  uint8_t qs[kQK5_0 / 2];
};
// x[i] = q[i] * d + m, q[i] as in Q5_0.
struct BlockQ5_1 {
  uint16_t d;  // f16
  uint16_t m;  // f16
  uint8_t qh[4];
  uint8_t qs[kQK5_1 / 2];
};
// 16 sub-blocks of 16; scales[s]: 4-bit scale (low) and min (high); x = d*scale*q - dmin*min, q 2 bits.
// Element e: q = (qs[32 (e / 128) + e % 32] >> 2 ((e % 128) / 32)) & 3, sub-block e / 16.
struct BlockQ2_K {
  uint8_t scales[kQK_K / 16];
  uint8_t qs[kQK_K / 4];
  uint16_t d;     // f16
  uint16_t dmin;  // f16
};
// 16 sub-blocks of 16; 6-bit scales (q3k_scale, signed); x = d * scale * (q - 4), q = 2 low bits
// (as Q2_K) | bit (e / 32) of hmask[e % 32] << 2.
struct BlockQ3_K {
  uint8_t hmask[kQK_K / 8];
  uint8_t qs[kQK_K / 4];
  uint8_t scales[kKScaleBytes];
  uint16_t d;  // f16
};
// Q4_K plus a fifth bit: q = nibble | bit (e / 32) of qh[e % 32] << 4.
struct BlockQ5_K {
  uint16_t d;     // f16
  uint16_t dmin;  // f16
  uint8_t scales[kKScaleBytes];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
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
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ2_K) == 84);
static_assert(sizeof(BlockQ3_K) == 110);
static_assert(sizeof(BlockQ5_K) == 176);

// Unpacks the 6-bit scale and min of sub-block j (0..7) of a Q4_K block.
KS_HD void q4k_scale_min(int j, const uint8_t* q, uint8_t& sc, uint8_t& m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Scale s (0..15) of a Q3_K block, signed: 6 bits (low 4 in bytes 0-7, high 2 in bytes 8-11) minus 32.
KS_HD int q3k_scale(const uint8_t* packed, int s) {
  const int low = (packed[s % 8] >> (4 * (s / 8))) & 0xF;
  const int high = (packed[8 + s % 4] >> (2 * (s / 4))) & 3;
  return (low | (high << 4)) - 32;
}

// Bit i (0..31) of the 32-bit little-endian mask in Q5_0/Q5_1's qh.
KS_HD int q5_high_bit(const uint8_t* qh, int i) {
  return (qh[i / 8] >> (i % 8)) & 1;
}

}  // namespace kestrel::quant
