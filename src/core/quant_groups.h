// The GGUF weight types decoded eight elements at a time: decode_group(row, g, w) writes elements
// 8g .. 8g + 7 of a row stored as blocks of that type. One source for the CPU reference dequantizer
// (dequant.cpp) and the CUDA kernels, which decode the same bits on the fly: a weight means the same on
// every backend. Products and sums are rounded one at a time (never fused into an fma), so the host and
// the device produce the same floats.
#pragma once

#include <cstdint>
#include <cstring>

#include "core/dtype.h"
#include "core/host_device.h"
#include "core/quant_blocks.h"

#ifdef __CUDACC__
#include <cuda_fp16.h>
#endif

namespace kestrel::quant {

constexpr int kGroup = 8;

// Elements per block of each weight type.
template <class Block>
inline constexpr int kBlockElems = kQK_K;
template <>
inline constexpr int kBlockElems<BlockQ4_0> = kQK4_0;
template <>
inline constexpr int kBlockElems<BlockQ4_1> = kQK4_1;
template <>
inline constexpr int kBlockElems<BlockQ5_0> = kQK5_0;
template <>
inline constexpr int kBlockElems<BlockQ5_1> = kQK5_1;
template <>
inline constexpr int kBlockElems<BlockQ8_0> = kQK8_0;

// IEEE half to float, exact (the host branch avoids _Float16, which nvcc's host pass may not know).
KS_HD float half_value(uint16_t h) {
#ifdef __CUDA_ARCH__
  return __half2float(__ushort_as_half(h));
#else
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  uint32_t u = sign;
  if (e == 0x1f) {
    u |= 0x7f800000u | (m << 13);
  } else if (e != 0) {
    u |= ((e + 112u) << 23) | (m << 13);
  } else if (m != 0) {  // subnormal: m * 2^-24, normalised
    uint32_t mm = m, shift = 0;
    while (!(mm & 0x400u)) mm <<= 1, ++shift;
    u |= ((113u - shift) << 23) | ((mm & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

KS_HD float mul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
KS_HD float add(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
KS_HD float sub(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
KS_HD float div(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

// Eight consecutive bytes as two little-endian words, read with the widest loads their alignment (in
// bytes, a power of two) allows: the device then issues one or two loads instead of eight.
struct Words2 {
  uint32_t lo, hi;
};
template <int kAlign>
KS_HD Words2 load8(const uint8_t* p) {
#ifdef __CUDA_ARCH__
  if constexpr (kAlign >= 8) {
    const uint2 v = *reinterpret_cast<const uint2*>(p);
    return {v.x, v.y};
  } else if constexpr (kAlign >= 4) {
    const auto* q = reinterpret_cast<const uint32_t*>(p);
    return {q[0], q[1]};
  } else {
    const auto* q = reinterpret_cast<const uint16_t*>(p);
    return {q[0] | static_cast<uint32_t>(q[1]) << 16, q[2] | static_cast<uint32_t>(q[3]) << 16};
  }
#else
  Words2 w;
  std::memcpy(&w, p, 8);
  return w;
#endif
}

// Byte k (0..3) of w as a float, exactly. On the device a byte permute builds 2^23 + byte and one
// subtraction leaves the byte: no int-to-float conversion, which runs at a quarter of the FMA rate.
KS_HD float byte_value(uint32_t w, int k) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(__uint_as_float(__byte_perm(w, 0x4B000000u, 0x7540u | static_cast<unsigned>(k))), 8388608.f);
#else
  return static_cast<float>((w >> (8 * k)) & 0xFFu);
#endif
}

// The alignment of a block of each type in a tensor whose rows start 16-byte aligned: the largest power of
// two dividing its size, up to 16.
template <class Block>
inline constexpr int kBlockAlign = sizeof(Block) % 16 == 0  ? 16
                                   : sizeof(Block) % 8 == 0 ? 8
                                   : sizeof(Block) % 4 == 0 ? 4
                                                            : 2;

// The 32-element types, group t (0..3) of a block: Q4_0 / Q5_0 x = (q - 2^(bits - 1)) * d, Q4_1 / Q5_1
// x = q * d + m; q the nibble (elements j and j + 16 share byte j) plus, for Q5, bit j of qh.
template <class Block>
KS_HD void decode_legacy(const Block& b, int t, float* w) {
  constexpr bool kFive = requires {
    b.qh;
  };
  constexpr bool kMin = requires {
    b.m;
  };
  // qs sits at offset 2 (d), 4 (d, m; or d, qh) or 8 (d, m, qh) of the block; groups are 8 bytes apart.
  constexpr int kAlign = kBlockAlign<Block> < 8 ? kBlockAlign<Block> : (kMin && kFive ? 8 : 2);
  const float d = half_value(b.d);
  const Words2 q = load8<kAlign>(b.qs + 8 * (t % 2));
  const int shift = t < 2 ? 0 : 4;
  const uint32_t lo = (q.lo >> shift) & 0x0F0F0F0Fu, hi = (q.hi >> shift) & 0x0F0F0F0Fu;
  for (int i = 0; i < kGroup; ++i) {
    float v = byte_value(i < 4 ? lo : hi, i % 4);
    if constexpr (kFive) v = add(v, static_cast<float>(q5_high_bit(b.qh, 8 * t + i) << 4));
    if constexpr (kMin)
      w[i] = add(mul(v, d), half_value(b.m));
    else
      w[i] = mul(sub(v, kFive ? 16.f : 8.f), d);  // exact: small integers
  }
}

KS_HD void decode_group(const BlockQ4_0* row, int64_t g, float* w) {
  decode_legacy(row[g / 4], g % 4, w);
}
KS_HD void decode_group(const BlockQ4_1* row, int64_t g, float* w) {
  decode_legacy(row[g / 4], g % 4, w);
}
KS_HD void decode_group(const BlockQ5_0* row, int64_t g, float* w) {
  decode_legacy(row[g / 4], g % 4, w);
}
KS_HD void decode_group(const BlockQ5_1* row, int64_t g, float* w) {
  decode_legacy(row[g / 4], g % 4, w);
}

KS_HD void decode_group(const BlockQ8_0* row, int64_t g, float* w) {
  const BlockQ8_0& b = row[g / 4];
  const float d = half_value(b.d);
  const Words2 q = load8<2>(reinterpret_cast<const uint8_t*>(b.qs) + 8 * (g % 4));
  // int8 as a float: flip the sign bits (x + 128 as an unsigned byte), then subtract 128; exact.
  const uint32_t lo = q.lo ^ 0x80808080u, hi = q.hi ^ 0x80808080u;
  for (int i = 0; i < kGroup; ++i) w[i] = mul(sub(byte_value(i < 4 ? lo : hi, i % 4), 128.f), d);
}

// Q4_K / Q5_K: 8 sub-blocks of 32 with 6-bit scales and mins, x = (d * sc) * q - dmin * m; sub-blocks 2p and
// 2p + 1 are the low and high nibbles of qs[32p .. 32p + 31]; Q5_K's fifth bit j of qh[l] for sub-block j.
template <class Block>
KS_HD void decode_k4(const Block& b, int e0, float* w) {
  const int j = e0 / 32, l0 = e0 % 32;
  uint8_t sc, m;
  q4k_scale_min(j, b.scales, sc, m);
  const float d1 = mul(half_value(b.d), static_cast<float>(sc)), m1 = mul(half_value(b.dmin), static_cast<float>(m));
  const Words2 q = load8<8>(b.qs + 32 * (j / 2) + l0);  // qs at offset 16 (Q4_K) or 48 (Q5_K)
  const int shift = 4 * (j % 2);
  uint32_t lo = (q.lo >> shift) & 0x0F0F0F0Fu, hi = (q.hi >> shift) & 0x0F0F0F0Fu;
  if constexpr (requires { b.qh; }) {  // bit j of each of 8 qh bytes, moved to bit 4 of its byte
    const Words2 h = load8<8>(b.qh + l0);
    lo |= ((h.lo >> j) & 0x01010101u) << 4;
    hi |= ((h.hi >> j) & 0x01010101u) << 4;
  }
  for (int i = 0; i < kGroup; ++i) w[i] = sub(mul(d1, byte_value(i < 4 ? lo : hi, i % 4)), m1);
}

KS_HD void decode_group(const BlockQ4_K* row, int64_t g, float* w) {
  decode_k4(row[g / 32], 8 * (g % 32), w);
}
KS_HD void decode_group(const BlockQ5_K* row, int64_t g, float* w) {
  decode_k4(row[g / 32], 8 * (g % 32), w);
}

// Q6_K: two halves of 128; in half h, quarter k (32 elements) takes the low (k < 2) or high nibbles of
// ql[64h + 32(k % 2) + l] and bits 2k, 2k + 1 of qh[32h + l]; 16 scales, x = (d * sc) * (q - 32).
KS_HD void decode_group(const BlockQ6_K* row, int64_t g, float* w) {
  const BlockQ6_K& b = row[g / 32];
  const int e0 = 8 * static_cast<int>(g % 32), h = e0 / 128, k = e0 % 128 / 32, l0 = e0 % 32;
  const float d = mul(half_value(b.d), static_cast<float>(b.scales[8 * h + 2 * k + l0 / 16]));
  const Words2 ql = load8<2>(b.ql + 64 * h + 32 * (k % 2) + l0), qh = load8<2>(b.qh + 32 * h + l0);
  const int shift = k < 2 ? 0 : 4;
  const uint32_t lo = ((ql.lo >> shift) & 0x0F0F0F0Fu) | ((qh.lo >> (2 * k)) & 0x03030303u) << 4;
  const uint32_t hi = ((ql.hi >> shift) & 0x0F0F0F0Fu) | ((qh.hi >> (2 * k)) & 0x03030303u) << 4;
  for (int i = 0; i < kGroup; ++i) w[i] = mul(d, sub(byte_value(i < 4 ? lo : hi, i % 4), 32.f));
}

// Q2_K: 16 sub-blocks of 16, 4-bit scale and min; element e: 2 bits at shift 2((e % 128) / 32) of
// qs[32(e / 128) + e % 32]; x = (d * sc) * q - dmin * m.
KS_HD void decode_group(const BlockQ2_K* row, int64_t g, float* w) {
  const BlockQ2_K& b = row[g / 32];
  const int e0 = 8 * static_cast<int>(g % 32);
  const uint8_t sc = b.scales[e0 / 16];
  const float d1 = mul(half_value(b.d), static_cast<float>(sc & 0xF)),
              m1 = mul(half_value(b.dmin), static_cast<float>(sc >> 4));
  const uint8_t* q = b.qs + 32 * (e0 / 128) + e0 % 32;
  const int shift = 2 * (e0 % 128 / 32);
  for (int i = 0; i < kGroup; ++i) w[i] = sub(mul(d1, static_cast<float>((q[i] >> shift) & 3)), m1);
}

// Q3_K: Q2_K's two low bits, the third from bit e / 32 of hmask[e % 32]; signed 6-bit scales; x = (d * sc) * (q - 4).
KS_HD void decode_group(const BlockQ3_K* row, int64_t g, float* w) {
  const BlockQ3_K& b = row[g / 32];
  const int e0 = 8 * static_cast<int>(g % 32), l0 = e0 % 32;
  const float d = mul(half_value(b.d), static_cast<float>(q3k_scale(b.scales, e0 / 16)));
  const uint8_t* q = b.qs + 32 * (e0 / 128) + l0;
  const int shift = 2 * (e0 % 128 / 32), bit = e0 / 32;
  for (int i = 0; i < kGroup; ++i) {
    const int v = ((q[i] >> shift) & 3) | (((b.hmask[l0 + i] >> bit) & 1) << 2);
    w[i] = mul(d, static_cast<float>(v - 4));
  }
}

// Calls f with a null `const Block*` of weight type t and returns true, or returns false when t is not one
// of the types above (a float or activation type).
template <class F>
bool visit_weight_block(DType t, F&& f) {
  switch (t) {
    case DType::Q4_0: f(static_cast<const BlockQ4_0*>(nullptr)); return true;
    case DType::Q4_1: f(static_cast<const BlockQ4_1*>(nullptr)); return true;
    case DType::Q5_0: f(static_cast<const BlockQ5_0*>(nullptr)); return true;
    case DType::Q5_1: f(static_cast<const BlockQ5_1*>(nullptr)); return true;
    case DType::Q8_0: f(static_cast<const BlockQ8_0*>(nullptr)); return true;
    case DType::Q2_K: f(static_cast<const BlockQ2_K*>(nullptr)); return true;
    case DType::Q3_K: f(static_cast<const BlockQ3_K*>(nullptr)); return true;
    case DType::Q4_K: f(static_cast<const BlockQ4_K*>(nullptr)); return true;
    case DType::Q5_K: f(static_cast<const BlockQ5_K*>(nullptr)); return true;
    case DType::Q6_K: f(static_cast<const BlockQ6_K*>(nullptr)); return true;
    default: return false;
  }
}

// Whether t is one of the weight types above (the GGUF block types the decoders read).
inline bool is_weight_type(DType t) {
  return visit_weight_block(t, [](const auto*) {});
}

}  // namespace kestrel::quant
