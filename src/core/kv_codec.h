// The codecs of the quantized KV-cache formats, one source for the CPU reference and the CUDA kernels (the
// cache writes encode, attention decodes in registers), so a cached key means the same bits on every
// backend. A quantized page holds codes ([blocks, block_size, n_kv_heads, head_dim] of F8E4M3, U8 or packed
// U4) and a parameter pool beside it (f16 [blocks, block_size, n_kv_heads, groups, P]): each group of
// `group` consecutive elements of one token's head row has its own scale (and, for the integer codes, its
// min). Every product and sum is rounded on its own (quant_groups.h's mul/add), never fused into an fma, so
// the host and the device encode to identical bytes.
//   F8E4M3: x = e4m3(c) * d,  d = amax / 448            P = 1 (d)
//   U8:     x = c * d + m,    c in 0..255, d = range/255 P = 2 (d, m)
//   U4:     x = c * d + m,    c in 0..15,  d = range/15; element 2j in the low nibble of byte j
//   U2:     x = c * d + m,    c in 0..3,   d = range/3; element 4j + i in bits 2i..2i+1 of byte j. SKVQ's
//           ternary values use the same slots with c in 0..2 (`qmax` 2): the decoder does not care.
// The integer encoders take the group's range [min, max] or, with a clip ratio a < 1 (SKVQ's clipped
// dynamic quantization), the range a times as wide about its centre; elements outside saturate.
// KIVI's keys group the other way (kv_encode_channels): each channel of a head over a group of consecutive
// tokens gets its own scale and min, stored per channel ([head_dim, 2] per head and token group); a row's
// codes are packed as above, so element i of a row decodes with kv_decode(codes, params + 2 i, i).
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core/dtype.h"
#include "core/host_device.h"
#include "core/quant_groups.h"

namespace kestrel::quant {

// The code types; a kernel is instantiated per code.
enum class KvCode : uint8_t { Fp8, U8, U4, U2 };

// The largest scale group the kernels encode (a thread holds one group in registers).
constexpr int kKvMaxGroup = 64;

// f16 parameters per group: a scale, and a min for the integer codes.
KS_HD constexpr int kv_params(KvCode c) {
  return c == KvCode::Fp8 ? 1 : 2;
}

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

#ifndef __CUDA_ARCH__
// Every code's value, for the host's decoders (a load instead of e4m3_value's branches).
inline const std::array<float, 256>& e4m3_table() {
  static const std::array<float, 256> t = [] {
    std::array<float, 256> a{};
    for (int c = 0; c < 256; ++c) a[c] = e4m3_value(static_cast<uint8_t>(c));
    return a;
  }();
  return t;
}
#endif

// The largest code of an integer code type.
KS_HD constexpr int kv_code_max(KvCode c) {
  return c == KvCode::U8 ? 255 : c == KvCode::U4 ? 15 : 3;
}

// Codes per byte.
KS_HD constexpr int kv_codes_per_byte(KvCode c) {
  return c == KvCode::U4 ? 2 : c == KvCode::U2 ? 4 : 1;
}

// ---- encoders ----

// The stored scale and min of an integer code over [lo, hi], narrowed about its centre by a clip ratio < 1:
// params[0] = f16(range / kMax), params[1] = f16(min).
KS_HD void kv_int_params(float lo, float hi, float kMax, float clip, uint16_t* params) {
  if (clip < 1.f) {
    const float c = mul(add(lo, hi), 0.5f), r = mul(mul(sub(hi, lo), 0.5f), clip);
    lo = sub(c, r);
    hi = add(c, r);
  }
  params[0] = half_bits(div(sub(hi, lo), kMax));
  params[1] = half_bits(lo);
}

// The integer code of x against the stored min m and the inverse id of the stored scale (0 for a zero
// scale), saturated to [0, kMax]. Codes are taken against the rounded parameters, so the decoder's error is
// the code rounding alone.
KS_HD int kv_int_code(float x, float m, float id, float kMax) {
#ifdef __CUDA_ARCH__
  const float q = rintf(mul(sub(x, m), id));
#else
  const float q = std::nearbyint(mul(sub(x, m), id));
#endif
  return static_cast<int>(q < 0.f ? 0.f : q > kMax ? kMax : q);
}

// n floats (one group, n a multiple of 4) into codes (the group's first byte) and params.
// qmax: the largest code to use (0: the type's; 2 with U2 for ternary); clip: the range's clip ratio.

template <KvCode C>
KS_HD void kv_encode_group(const float* x, int n, uint8_t* codes, uint16_t* params, int qmax = 0, float clip = 1.f) {
  if constexpr (C == KvCode::Fp8) {
    float amax = 0.f;
    for (int i = 0; i < n; ++i) amax = fmaxf(amax, fabsf(x[i]));
    params[0] = half_bits(div(amax, 448.f));
    const float d = half_value(params[0]), id = d > 0.f ? div(1.f, d) : 0.f;
    for (int i = 0; i < n; ++i) codes[i] = e4m3_code(mul(x[i], id));
  } else {
    const float kMax = static_cast<float>(qmax > 0 ? qmax : kv_code_max(C));
    float lo = x[0], hi = x[0];
    for (int i = 1; i < n; ++i) lo = fminf(lo, x[i]), hi = fmaxf(hi, x[i]);
    kv_int_params(lo, hi, kMax, clip, params);
    const float d = half_value(params[0]), m = half_value(params[1]), id = d > 0.f ? div(1.f, d) : 0.f;
    for (int i = 0; i < n; ++i) {
      constexpr int kPer = kv_codes_per_byte(C), kBits = 8 / kPer;
      const auto code = static_cast<uint8_t>(kv_int_code(x[i], m, id, kMax) << (kBits * (i % kPer)));
      if (i % kPer == 0)
        codes[i / kPer] = code;
      else
        codes[i / kPer] |= code;
    }
  }
}

// KIVI's keys: n_tokens rows of `channels` elements (row t at x + t * x_stride, channels a multiple of 4),
// each channel quantized over the tokens with its own scale and min (params + 2 i; the full range, no clip),
// row t's codes at codes + t * code_stride. Integer codes only.
template <KvCode C>
KS_HD void kv_encode_channels(const float* x, int64_t x_stride, int n_tokens, int channels, uint8_t* codes,
                              int64_t code_stride, uint16_t* params) {
  static_assert(C != KvCode::Fp8, "per-channel groups take integer codes");
  constexpr int kPer = kv_codes_per_byte(C), kBits = 8 / kPer;
  const float kMax = static_cast<float>(kv_code_max(C));
  for (int t = 0; t < n_tokens; ++t)
    for (int j = 0; j < channels / kPer; ++j) codes[t * code_stride + j] = 0;
  for (int i = 0; i < channels; ++i) {
    float lo = x[i], hi = x[i];
    for (int t = 1; t < n_tokens; ++t) lo = fminf(lo, x[t * x_stride + i]), hi = fmaxf(hi, x[t * x_stride + i]);
    uint16_t* p = params + 2 * i;
    kv_int_params(lo, hi, kMax, 1.f, p);
    const float d = half_value(p[0]), m = half_value(p[1]), id = d > 0.f ? div(1.f, d) : 0.f;
    for (int t = 0; t < n_tokens; ++t)
      codes[t * code_stride + i / kPer] |=
          static_cast<uint8_t>(kv_int_code(x[t * x_stride + i], m, id, kMax) << (kBits * (i % kPer)));
  }
}

// ---- decoders: element i of a head row (codes: the row's first byte; params: the group holding i) ----

// The code of element i as a float (exact).
template <KvCode C>
KS_HD float kv_code_value(const uint8_t* codes, int i) {
  if constexpr (C == KvCode::Fp8) {
#ifdef __CUDA_ARCH__
    return e4m3_value(codes[i]);
#else
    return e4m3_table()[codes[i]];
#endif
  } else if constexpr (C == KvCode::U8) {
    return static_cast<float>(codes[i]);
  } else if constexpr (C == KvCode::U4) {
    return static_cast<float>((codes[i / 2] >> (4 * (i % 2))) & 0xF);
  } else {
    return static_cast<float>((codes[i / 4] >> (2 * (i % 4))) & 0x3);
  }
}

template <KvCode C>
KS_HD float kv_decode(const uint8_t* codes, const uint16_t* params, int i) {
  const float v = mul(kv_code_value<C>(codes, i), half_value(params[0]));
  if constexpr (C == KvCode::Fp8)
    return v;
  else
    return add(v, half_value(params[1]));
}

// Elements i0 .. i0 + 7 (i0 a multiple of 8, inside one group).
template <KvCode C>
KS_HD void kv_decode8(const uint8_t* codes, const uint16_t* params, int i0, float* w) {
  const float d = half_value(params[0]);
  const float m = C == KvCode::Fp8 ? 0.f : half_value(params[1]);
  for (int i = 0; i < kGroup; ++i) {
    const float v = mul(kv_code_value<C>(codes, i0 + i), d);
    w[i] = C == KvCode::Fp8 ? v : add(v, m);
  }
}

// Bytes of the codes of n elements (n a multiple of the codes per byte): also the byte offset of element n.
KS_HD constexpr int64_t kv_row_bytes(KvCode c, int64_t n) {
  return n / kv_codes_per_byte(c);
}

// Calls f with std::integral_constant<KvCode, c> for the code of page type t; false for other types.
template <class F>
bool visit_kv_code(DType t, F&& f) {
  switch (t) {
    case DType::F8E4M3: f(std::integral_constant<KvCode, KvCode::Fp8>{}); return true;
    case DType::U8: f(std::integral_constant<KvCode, KvCode::U8>{}); return true;
    case DType::U4: f(std::integral_constant<KvCode, KvCode::U4>{}); return true;
    case DType::U2: f(std::integral_constant<KvCode, KvCode::U2>{}); return true;
    default: return false;
  }
}

// The code of a page dtype (F8E4M3, U8, U4, U2); false for other types.
inline bool kv_code_of(DType t, KvCode* c) {
  return visit_kv_code(t, [&](auto code) { *c = decltype(code)::value; });
}

}  // namespace kestrel::quant
