#include "core/dequant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/half.h"
#include "core/kv_codec.h"
#include "core/quant_blocks.h"
#include "core/quant_groups.h"
#include "core/quantize_k.h"

namespace kestrel {
namespace {

using namespace quant;

void dequant_q8_1(const BlockQ8_1* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK8_1) {
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < kQK8_1; ++j) y[j] = b[i].qs[j] * d;
  }
}

// The weight types, through their shared group decoders (quant_groups.h).
template <class Block>
void dequant_groups(const void* src, float* y, int64_t n) {
  const auto* row = static_cast<const Block*>(src);
  for (int64_t g = 0; g < n / kGroup; ++g) decode_group(row, g, y + kGroup * g);
}

void dequant_q8_k(const BlockQ8_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK_K)
    for (int j = 0; j < kQK_K; ++j) y[j] = b[i].d * b[i].qs[j];
}

float absmax(const float* x, int n) {
  float a = 0;
  for (int j = 0; j < n; ++j) a = std::max(a, std::fabs(x[j]));
  return a;
}

void quant_q8_0(const float* x, BlockQ8_0* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK8_0) {
    const float d = absmax(x, kQK8_0) / 127.f, id = d ? 1.f / d : 0.f;
    b[i].d = f32_to_f16(d);
    for (int j = 0; j < kQK8_0; ++j) b[i].qs[j] = static_cast<int8_t>(std::nearbyint(x[j] * id));
  }
}

void quant_q8_1(const float* x, BlockQ8_1* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK8_1) {
    const float d = absmax(x, kQK8_1) / 127.f, id = d ? 1.f / d : 0.f;
    int sum = 0;
    for (int j = 0; j < kQK8_1; ++j) {
      b[i].qs[j] = static_cast<int8_t>(std::nearbyint(x[j] * id));
      sum += b[i].qs[j];
    }
    b[i].d = f32_to_f16(d);
    b[i].s = f32_to_f16(sum * d);
  }
}

void quant_q8_k(const float* x, BlockQ8_K* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    // ggml keeps the sign of the largest-magnitude value so it maps to exactly -128..127 range.
    float amax = 0, max = 0;
    for (int j = 0; j < kQK_K; ++j)
      if (std::fabs(x[j]) > amax) amax = std::fabs(x[j]), max = x[j];
    if (amax == 0) {
      std::memset(&b[i], 0, sizeof(BlockQ8_K));
      continue;
    }
    const float iscale = -128.f / max;
    for (int j = 0; j < kQK_K; ++j)
      b[i].qs[j] = static_cast<int8_t>(std::min(127, static_cast<int>(std::nearbyint(iscale * x[j]))));
    for (int j = 0; j < kQK_K / 16; ++j) {
      int s = 0;
      for (int l = 0; l < 16; ++l) s += b[i].qs[j * 16 + l];
      b[i].bsums[j] = static_cast<int16_t>(s);
    }
    b[i].d = 1.f / iscale;
  }
}

// ggml's rules for the 32-element types, as integers q[j] in [0, levels): symmetric (Q4_0, Q5_0) maps the
// largest-magnitude value, sign kept, to level 0 (x = (q - levels / 2) * d); asymmetric (Q4_1, Q5_1) spans
// [min, max] (x = q * d + min). Return d.
float symmetric_levels(const float* x, int levels, int* q) {
  float amax = 0, max = 0;
  for (int j = 0; j < 32; ++j)
    if (std::fabs(x[j]) > amax) amax = std::fabs(x[j]), max = x[j];
  const float d = max / static_cast<float>(-levels / 2), id = d ? 1.f / d : 0.f;
  for (int j = 0; j < 32; ++j) q[j] = std::min(levels - 1, static_cast<int>(x[j] * id + (levels / 2 + 0.5f)));
  return d;
}

float asymmetric_levels(const float* x, int levels, int* q, float* lo) {
  float hi = x[0];
  *lo = x[0];
  for (int j = 1; j < 32; ++j) *lo = std::min(*lo, x[j]), hi = std::max(hi, x[j]);
  const float d = (hi - *lo) / static_cast<float>(levels - 1), id = d ? 1.f / d : 0.f;
  for (int j = 0; j < 32; ++j) q[j] = std::min(levels - 1, static_cast<int>((x[j] - *lo) * id + 0.5f));
  return d;
}

// Low nibbles of q into qs (element j and j + 16 share byte j), and for the 5-bit types bit 4 into qh.
void pack_nibbles(const int* q, uint8_t* qs) {
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>((q[j] & 0xF) | (q[j + 16] & 0xF) << 4);
}
void pack_fifth_bits(const int* q, uint8_t* qh) {
  uint32_t bits = 0;
  for (int j = 0; j < 32; ++j) bits |= static_cast<uint32_t>(q[j] >> 4) << j;
  for (int k = 0; k < 4; ++k) qh[k] = static_cast<uint8_t>(bits >> (8 * k));
}

// ggml's quantizers of the 32-element types: symmetric without a min, asymmetric with one; 16 or 32 levels.
template <class Block>
void quant_legacy(const float* x, Block* b, int64_t nb) {
  constexpr bool kFive = requires {
    b->qh;
  };
  constexpr int kLevels = kFive ? 32 : 16;
  int q[32];
  for (int64_t i = 0; i < nb; ++i, x += 32) {
    if constexpr (requires { b->m; }) {
      float lo;
      b[i].d = f32_to_f16(asymmetric_levels(x, kLevels, q, &lo));
      b[i].m = f32_to_f16(lo);
    } else {
      b[i].d = f32_to_f16(symmetric_levels(x, kLevels, q));
    }
    pack_nibbles(q, b[i].qs);
    if constexpr (kFive) pack_fifth_bits(q, b[i].qh);
  }
}

}  // namespace

void dequantize_row(DType t, const void* src, float* dst, int64_t n) {
  const int64_t nb = n / dtype_info(t).block_size;
  KS_CHECK(nb * dtype_info(t).block_size == n, "row of {} {} elements is not whole blocks", n, dtype_name(t));
  if (visit_weight_block(t, [&]<class Block>(const Block*) { dequant_groups<Block>(src, dst, n); })) return;
  // The KV code types hold codes: their values here, without a page's scales (kv_codec.h decodes those).
  if (visit_kv_code(t, [&](auto c) {
        for (int64_t i = 0; i < n; ++i) dst[i] = kv_code_value<decltype(c)::value>(static_cast<const uint8_t*>(src), i);
      }))
    return;
  switch (t) {
    case DType::F32: std::memcpy(dst, src, n * sizeof(float)); return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(static_cast<const uint16_t*>(src)[i]);
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(static_cast<const uint16_t*>(src)[i]);
      return;
    case DType::Q8_1: dequant_q8_1(static_cast<const BlockQ8_1*>(src), dst, nb); return;
    case DType::Q8_K: dequant_q8_k(static_cast<const BlockQ8_K*>(src), dst, nb); return;
    default: KS_FAIL("cannot convert {} to f32", dtype_name(t));
  }
}

void quantize_row(DType t, const float* src, void* dst, int64_t n) {
  const int64_t nb = n / dtype_info(t).block_size;
  KS_CHECK(nb * dtype_info(t).block_size == n, "row of {} {} elements is not whole blocks", n, dtype_name(t));
  switch (t) {
    case DType::F32: std::memcpy(dst, src, n * sizeof(float)); return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i] = f32_to_f16(src[i]);
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i] = f32_to_bf16(src[i]);
      return;
    case DType::Q4_0: quant_legacy(src, static_cast<BlockQ4_0*>(dst), nb); return;
    case DType::Q4_1: quant_legacy(src, static_cast<BlockQ4_1*>(dst), nb); return;
    case DType::F8E4M3:
      for (int64_t i = 0; i < n; ++i) static_cast<uint8_t*>(dst)[i] = e4m3_code(src[i]);
      return;
    case DType::Q8_0: quant_q8_0(src, static_cast<BlockQ8_0*>(dst), nb); return;
    case DType::Q8_1: quant_q8_1(src, static_cast<BlockQ8_1*>(dst), nb); return;
    case DType::Q8_K: quant_q8_k(src, static_cast<BlockQ8_K*>(dst), nb); return;
    case DType::Q5_0: quant_legacy(src, static_cast<BlockQ5_0*>(dst), nb); return;
    case DType::Q5_1: quant_legacy(src, static_cast<BlockQ5_1*>(dst), nb); return;
    case DType::Q2_K: quantize_q2_k(src, static_cast<BlockQ2_K*>(dst), nb); return;
    case DType::Q3_K: quantize_q3_k(src, static_cast<BlockQ3_K*>(dst), nb); return;
    case DType::Q4_K: quantize_q4_k(src, static_cast<BlockQ4_K*>(dst), nb); return;
    case DType::Q5_K: quantize_q5_k(src, static_cast<BlockQ5_K*>(dst), nb); return;
    case DType::Q6_K: quantize_q6_k(src, static_cast<BlockQ6_K*>(dst), nb); return;
    default: KS_FAIL("quantizing to {} is not supported", dtype_name(t));
  }
}

}  // namespace kestrel
