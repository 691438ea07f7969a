#include "core/quantize_k.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/half.h"

namespace kestrel::quant {
namespace {

int clamp_round(float v, int lo, int hi) {
  return std::clamp(static_cast<int>(std::nearbyint(v)), lo, hi);
}

// Inverse of q4k_scale_min: 6-bit scales sc[8] and mins m[8] into the 12 packed bytes.
void pack_scales(const int* sc, const int* m, uint8_t* q) {
  for (int j = 0; j < 4; ++j) {
    q[j] = static_cast<uint8_t>(sc[j] | (sc[j + 4] >> 4) << 6);
    q[j + 4] = static_cast<uint8_t>(m[j] | (m[j + 4] >> 4) << 6);
    q[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | (m[j + 4] & 0xF) << 4);
  }
}

// The value of largest magnitude among x[0..n), sign kept (the symmetric types map it to their widest,
// negative level).
float signed_absmax(const float* x, int n) {
  float big = 0;
  for (int l = 0; l < n; ++l)
    if (std::fabs(x[l]) > std::fabs(big)) big = x[l];
  return big;
}

// The two low bits of element e's level into Q2_K/Q3_K's qs (as the decoders read them: quant_groups.h).
void put_low_bits(uint8_t* qs, int e, int q) {
  qs[32 * (e / 128) + e % 32] |= static_cast<uint8_t>((q & 3) << (2 * (e % 128 / 32)));
}

// Squared error of x rounded to scale * q - offset, q in [0, levels].
float fit_error(const float* x, int n, int levels, float scale, float offset) {
  float e = 0;
  for (int l = 0; l < n; ++l) {
    const int q = clamp_round((x[l] + offset) / scale, 0, levels);
    const float d = scale * static_cast<float>(q) - offset - x[l];
    e += d * d;
  }
  return e;
}

// The scale and offset (>= 0) of x ~ scale * q - offset: from the range [min(0, min x), max x], then
// refined while it helps by alternating the rounding with a least-squares fit of scale and offset to the
// rounded levels (a full range wastes levels on the one or two extreme weights).
void fit_scale_offset(const float* x, int n, int levels, float& scale, float& offset) {
  float lo = 0, hi = 0;
  for (int l = 0; l < n; ++l) lo = std::min(lo, x[l]), hi = std::max(hi, x[l]);
  scale = (hi - lo) / static_cast<float>(levels);
  offset = -lo;
  if (scale <= 0) return;
  float best = fit_error(x, n, levels, scale, offset);
  for (int it = 0; it < 6; ++it) {
    double sq = 0, sx = 0, sqq = 0, sqx = 0;
    for (int l = 0; l < n; ++l) {
      const double q = clamp_round((x[l] + offset) / scale, 0, levels);
      sq += q, sx += x[l], sqq += q * q, sqx += q * x[l];
    }
    const double det = n * sqq - sq * sq;
    if (det <= 0) break;
    double a = (n * sqx - sq * sx) / det, b = (a * sq - sx) / n;
    if (b < 0) b = 0, a = sqq > 0 ? sqx / sqq : 0;  // the offset can't be negative: fit the scale alone
    if (a <= 0) break;
    const float e = fit_error(x, n, levels, static_cast<float>(a), static_cast<float>(b));
    if (e >= best) break;
    best = e, scale = static_cast<float>(a), offset = static_cast<float>(b);
  }
}

// Q4_K and Q5_K: 8 sub-blocks of 32, x ~ (d * sc) * q - dmin * m, q in [0, levels].
template <class Block>
void quantize_k4(const float* x, Block* blocks, int64_t nb) {
  constexpr bool kFive = requires(Block b) {
    b.qh;
  };
  constexpr int kLevels = kFive ? 31 : 15;
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    Block& b = blocks[i];
    float scale[8], minv[8];
    for (int j = 0; j < 8; ++j) fit_scale_offset(x + 32 * j, 32, kLevels, scale[j], minv[j]);
    b.d = f32_to_f16(*std::max_element(scale, scale + 8) / 63);
    b.dmin = f32_to_f16(*std::max_element(minv, minv + 8) / 63);
    const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
    int sc[8], m[8];
    for (int j = 0; j < 8; ++j) {
      sc[j] = d > 0 ? clamp_round(scale[j] / d, 0, 63) : 0;
      m[j] = dmin > 0 ? clamp_round(minv[j] / dmin, 0, 63) : 0;
    }
    pack_scales(sc, m, b.scales);
    if constexpr (kFive) std::memset(b.qh, 0, sizeof b.qh);
    for (int j = 0; j < 8; ++j) {
      const float step = d * sc[j], offset = dmin * m[j];
      uint8_t* qs = b.qs + 32 * (j / 2);
      for (int l = 0; l < 32; ++l) {
        const int q = step > 0 ? clamp_round((x[32 * j + l] + offset) / step, 0, kLevels) : 0;
        if (j % 2 == 0)
          qs[l] = static_cast<uint8_t>(q & 0xF);
        else
          qs[l] = static_cast<uint8_t>(qs[l] | (q & 0xF) << 4);
        if constexpr (kFive) b.qh[l] = static_cast<uint8_t>(b.qh[l] | (q >> 4) << j);
      }
    }
  }
}

}  // namespace

// Q2_K: 16 sub-blocks of 16 with 4-bit scales and mins, x ~ (d * sc) * q - dmin * m, q in [0, 3].
void quantize_q2_k(const float* x, BlockQ2_K* blocks, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    BlockQ2_K& b = blocks[i];
    float scale[16], offset[16];
    for (int s = 0; s < 16; ++s) fit_scale_offset(x + 16 * s, 16, 3, scale[s], offset[s]);
    b.d = f32_to_f16(*std::max_element(scale, scale + 16) / 15);
    b.dmin = f32_to_f16(*std::max_element(offset, offset + 16) / 15);
    const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
    std::memset(b.qs, 0, sizeof b.qs);
    for (int s = 0; s < 16; ++s) {
      const int sc = d > 0 ? clamp_round(scale[s] / d, 0, 15) : 0;
      const int m = dmin > 0 ? clamp_round(offset[s] / dmin, 0, 15) : 0;
      b.scales[s] = static_cast<uint8_t>(sc | m << 4);
      const float step = d * sc, off = dmin * m;
      for (int l = 0; l < 16; ++l) {
        const int e = 16 * s + l;
        put_low_bits(b.qs, e, step > 0 ? clamp_round((x[e] + off) / step, 0, 3) : 0);
      }
    }
  }
}

// Q3_K: 16 sub-blocks of 16 with signed 6-bit scales, x ~ (d * sc) * q, q in [-4, 3]: each sub-block's largest
// magnitude, sign kept, maps to -4, and the scales to [-32, 31] against d.
void quantize_q3_k(const float* x, BlockQ3_K* blocks, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    BlockQ3_K& b = blocks[i];
    float scale[16], big_scale = 0;
    for (int s = 0; s < 16; ++s) {
      scale[s] = signed_absmax(x + 16 * s, 16) / -4.f;
      if (std::fabs(scale[s]) > std::fabs(big_scale)) big_scale = scale[s];
    }
    b.d = f32_to_f16(big_scale / -32.f);
    const float d = f16_to_f32(b.d);
    std::memset(b.qs, 0, sizeof b.qs);
    std::memset(b.hmask, 0, sizeof b.hmask);
    std::memset(b.scales, 0, sizeof b.scales);
    for (int s = 0; s < 16; ++s) {
      const int sc = d != 0 ? clamp_round(scale[s] / d, -32, 31) : 0, packed = sc + 32;
      b.scales[s % 8] |= static_cast<uint8_t>((packed & 0xF) << (4 * (s / 8)));
      b.scales[8 + s % 4] |= static_cast<uint8_t>((packed >> 4) << (2 * (s / 4)));
      const float step = d * sc;
      for (int l = 0; l < 16; ++l) {
        const int e = 16 * s + l;
        const int q = (step != 0 ? clamp_round(x[e] / step, -4, 3) : 0) + 4;
        put_low_bits(b.qs, e, q);
        b.hmask[e % 32] |= static_cast<uint8_t>((q >> 2) << (e / 32));
      }
    }
  }
}

void quantize_q4_k(const float* x, BlockQ4_K* b, int64_t nb) {
  quantize_k4(x, b, nb);
}
void quantize_q5_k(const float* x, BlockQ5_K* b, int64_t nb) {
  quantize_k4(x, b, nb);
}

// 16 sub-blocks of 16, x ~ (d * sc) * (q - 32): each sub-block's largest magnitude, sign kept, maps to
// -32 (the widest level); the int8 scales are rounded against d = the largest |scale| / 127.
void quantize_q6_k(const float* x, BlockQ6_K* blocks, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    BlockQ6_K& b = blocks[i];
    float scale[16], amax = 0;
    for (int s = 0; s < 16; ++s) {
      scale[s] = signed_absmax(x + 16 * s, 16) / -32.f;
      amax = std::max(amax, std::fabs(scale[s]));
    }
    b.d = f32_to_f16(amax / 127);
    const float d = f16_to_f32(b.d);
    std::memset(b.ql, 0, sizeof b.ql);
    std::memset(b.qh, 0, sizeof b.qh);
    for (int s = 0; s < 16; ++s) {
      const int sc = d > 0 ? clamp_round(scale[s] / d, -128, 127) : 0;
      b.scales[s] = static_cast<int8_t>(sc);
      const float step = d * sc;
      for (int l = 0; l < 16; ++l) {
        const int e = 16 * s + l;
        const int q = (step != 0 ? clamp_round(x[e] / step, -32, 31) : 0) + 32;
        const int h = e / 128, k = e % 128 / 32, ll = e % 32;
        uint8_t& lo = b.ql[64 * h + 32 * (k % 2) + ll];
        lo = static_cast<uint8_t>(lo | (q & 0xF) << (k < 2 ? 0 : 4));
        b.qh[32 * h + ll] = static_cast<uint8_t>(b.qh[32 * h + ll] | (q >> 4) << (2 * k));
      }
    }
  }
}

}  // namespace kestrel::quant
