// Block layouts of the quantized KV-cache page types and their codecs, one source for the CPU reference
// (dequant.cpp) and the CUDA kernels (the cache write quantizes, attention dequantizes in registers), so a
// cached key means the same bits on every backend. A block covers 64 consecutive elements of one token's
// row, always inside one head (head_dim is a multiple of 64 for these types): the scale is per token and
// head group. Every product and sum is rounded on its own (quant_groups.h's mul/add), never fused into an
// fma, so the host and the device encode to identical bytes.
//   kv_fp8:  x = e4m3(q) * d, d = amax / 448 (f16)                 66 bytes per 64 elements (8.25 bits)
//   kv_int8: x = q * d + m, q in 0..255, m = min, d = range / 255  68 bytes per 64 elements (8.5 bits)
// The int4 format is ggml's Q4_1 (32 elements, x = q * d + m, 5 bits per element); its encoder here follows
// ggml's rule exactly (quantize_row(Q4_1) gives the same bytes).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/dtype.h"
#include "core/host_device.h"
#include "core/quant_blocks.h"
#include "core/quant_groups.h"

namespace kestrel::quant {

constexpr int kQKKv = 64;

template <class Block>
inline constexpr int kv_block_elems = kQKKv;
template <>
inline constexpr int kv_block_elems<BlockQ4_1> = kQK4_1;

struct BlockKvFp8 {
  uint16_t d;  // f16
  uint8_t q[kQKKv];
};
struct BlockKvInt8 {
  uint16_t d;  // f16
  uint16_t m;  // f16
  uint8_t q[kQKKv];
};

KS_HD uint32_t float_bits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

KS_HD float bits_float(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

KS_HD float div(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

// f32 -> IEEE half bits, round to nearest even (as _Float16 and __float2half_rn).
KS_HD uint16_t half_bits(float f) {
#ifdef __CUDA_ARCH__
  return __half_as_ushort(__float2half_rn(f));
#else
  uint32_t u = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (u >= 0x477ff000u) return sign | 0x7c00u;  // rounds to infinity (>= 65520)
  if (u < 0x38800000u)                          // below 2^-14: a subnormal half, x * 2^24 rounded to an integer
    return sign | static_cast<uint16_t>(std::nearbyint(bits_float(u) * 16777216.f));
  const uint32_t r = u + 0xfffu + ((u >> 13) & 1u);
  return sign | static_cast<uint16_t>((r - 0x38000000u) >> 13);
#endif
}

// OCP FP8 E4M3 (the "fn" variant: no infinities, 0x7f/0xff NaN, largest finite 448): f32 -> code with round
// to nearest even and saturation to +-448 (as __NV_SATFINITE), and code -> f32 (exact).
KS_HD uint8_t e4m3_code(float f) {
  uint32_t u = float_bits(f);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return sign | 0x7fu;
  if (u >= 0x43e00000u) return sign | 0x7eu;  // >= 448 saturates
  if (u < 0x3c800000u) {                      // below 2^-6: subnormal codes m * 2^-9 (m = 8 is 2^-6, code 8)
#ifdef __CUDA_ARCH__
    return sign | static_cast<uint8_t>(rintf(bits_float(u) * 512.f));
#else
    return sign | static_cast<uint8_t>(std::nearbyint(bits_float(u) * 512.f));
#endif
  }
  const uint32_t mant = u & 0x7fffffu, exp = (u >> 23) - 120u;  // rebias 127 -> 7
  uint32_t code = (exp << 3) | (mant >> 20);
  const uint32_t rest = mant & 0xfffffu;
  if (rest > 0x80000u || (rest == 0x80000u && (code & 1u))) ++code;  // a carry moves into the exponent
  return sign | static_cast<uint8_t>(code > 0x7eu ? 0x7eu : code);
}

KS_HD float e4m3_value(uint8_t c) {
  const uint32_t e = (c >> 3) & 0xfu, m = c & 7u;
  float v;
  if (e == 0)
    v = mul(static_cast<float>(m), 1.f / 512.f);
  else if (e == 15 && m == 7)
    v = bits_float(0x7fc00000u);
  else
    v = bits_float(((e + 120u) << 23) | (m << 20));
  return (c & 0x80u) ? -v : v;
}

// ---- encoders: 64 (Q4_1: 32) floats into one block ----

KS_HD void encode_block(const float* x, BlockKvFp8& b) {
  float amax = 0.f;
  for (int i = 0; i < kQKKv; ++i) amax = fmaxf(amax, fabsf(x[i]));
  b.d = half_bits(div(amax, 448.f));
  const float d = half_value(b.d), id = d > 0.f ? div(1.f, d) : 0.f;
  for (int i = 0; i < kQKKv; ++i) b.q[i] = e4m3_code(mul(x[i], id));
}

KS_HD void encode_block(const float* x, BlockKvInt8& b) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < kQKKv; ++i) lo = fminf(lo, x[i]), hi = fmaxf(hi, x[i]);
  b.d = half_bits(div(sub(hi, lo), 255.f));
  b.m = half_bits(lo);
  // Codes are taken against the stored (rounded) scale and min, so the decoder's error is the rounding alone.
  const float d = half_value(b.d), m = half_value(b.m), id = d > 0.f ? div(1.f, d) : 0.f;
  for (int i = 0; i < kQKKv; ++i) {
#ifdef __CUDA_ARCH__
    const float q = rintf(mul(sub(x[i], m), id));
#else
    const float q = std::nearbyint(mul(sub(x[i], m), id));
#endif
    b.q[i] = static_cast<uint8_t>(q < 0.f ? 0.f : q > 255.f ? 255.f : q);
  }
}

// ggml's Q4_1 rule: d = (max - min) / 15 and the min from the unrounded values, q = trunc((x - min) / d + 0.5).
KS_HD void encode_block(const float* x, BlockQ4_1& b) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < kQK4_1; ++i) lo = fminf(lo, x[i]), hi = fmaxf(hi, x[i]);
  const float d = div(sub(hi, lo), 15.f), id = d != 0.f ? div(1.f, d) : 0.f;
  b.d = half_bits(d);
  b.m = half_bits(lo);
  for (int j = 0; j < kQK4_1 / 2; ++j) {
    const int q0 = static_cast<int>(add(mul(sub(x[j], lo), id), 0.5f));
    const int q1 = static_cast<int>(add(mul(sub(x[j + 16], lo), id), 0.5f));
    b.qs[j] = static_cast<uint8_t>((q0 < 15 ? q0 : 15) | (q1 < 15 ? q1 : 15) << 4);
  }
}

// ---- decoders: eight elements (decode_group, as quant_groups.h) or one ----

KS_HD void decode_group(const BlockKvFp8* row, int64_t g, float* w) {
  const BlockKvFp8& b = row[g / 8];
  const float d = half_value(b.d);
  const uint8_t* q = b.q + 8 * (g % 8);
  for (int i = 0; i < kGroup; ++i) w[i] = mul(e4m3_value(q[i]), d);
}

KS_HD void decode_group(const BlockKvInt8* row, int64_t g, float* w) {
  const BlockKvInt8& b = row[g / 8];
  const float d = half_value(b.d), m = half_value(b.m);
  const uint8_t* q = b.q + 8 * (g % 8);
  for (int i = 0; i < kGroup; ++i) w[i] = add(mul(static_cast<float>(q[i]), d), m);
}

KS_HD float element(const BlockKvFp8* row, int i) {
  const BlockKvFp8& b = row[i / kQKKv];
  return mul(e4m3_value(b.q[i % kQKKv]), half_value(b.d));
}

KS_HD float element(const BlockKvInt8* row, int i) {
  const BlockKvInt8& b = row[i / kQKKv];
  return add(mul(static_cast<float>(b.q[i % kQKKv]), half_value(b.d)), half_value(b.m));
}

// Q4_1 element i of a block: the low nibble of qs[i] for i < 16, the high nibble of qs[i - 16] after.
KS_HD float element(const BlockQ4_1* row, int i) {
  const BlockQ4_1& b = row[i / kQK4_1];
  const int j = i % kQK4_1;
  const int q = j < 16 ? b.qs[j] & 0xF : b.qs[j - 16] >> 4;
  return add(mul(static_cast<float>(q), half_value(b.d)), half_value(b.m));
}

// Calls f with a null `const Block*` of KV page type t and returns true; false for the other types.
template <class F>
bool visit_kv_block(DType t, F&& f) {
  switch (t) {
    case DType::KV_FP8: f(static_cast<const BlockKvFp8*>(nullptr)); return true;
    case DType::KV_INT8: f(static_cast<const BlockKvInt8*>(nullptr)); return true;
    default: return false;
  }
}

// The element types a KV cache page may hold: the float types, the KV block types above and llama.cpp's
// cache types (q8_0, q4_0, q4_1, q5_0, q5_1).
inline bool is_kv_page_type(DType t) {
  switch (t) {
    case DType::F32:
    case DType::F16:
    case DType::BF16:
    case DType::KV_FP8:
    case DType::KV_INT8:
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q5_0:
    case DType::Q5_1: return true;
    default: return false;
  }
}

}  // namespace kestrel::quant
