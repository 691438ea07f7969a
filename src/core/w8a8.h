// W8A8 ("scaled 8-bit", core/linear.h): 8-bit weights with one f32 scale per output channel, multiplied by
// activations quantized to the same type per row (token) at run time, as vLLM's fp8 and int8 W8A8 do.
//
// A row (of weights or activations) of type t, Q = 127 for I8 (symmetric: codes -127..127) or 448 for
// F8E4M3 (OCP e4m3, saturating):
//     scale = absmax / Q,   inv = absmax > 0 ? Q / absmax : 0,
//     code  = I8: clamp(rint(x * inv), -127, 127);  F8E4M3: e4m3_code(x * inv),
// so x ~ code * scale. The host and the device compute the same codes (every product rounded on its own).
#pragma once

#include <cmath>
#include <cstdint>

#include "core/dtype.h"
#include "core/host_device.h"
#include "core/kv_codec.h"
#include "core/tensor.h"

namespace kestrel {

// Whether `t` is a W8A8 element type (I8 or F8E4M3).
constexpr bool is_w8_type(DType t) {
  return t == DType::I8 || t == DType::F8E4M3;
}

KS_HD float w8_qmax(bool fp8) {
  return fp8 ? 448.f : 127.f;
}

// The inverse scale codes are taken with, from the row's absolute maximum.
KS_HD float w8_inv_scale(float absmax, bool fp8) {
  return absmax > 0.f ? quant::div(w8_qmax(fp8), absmax) : 0.f;
}

// The code byte of x (two's complement for I8).
KS_HD uint8_t w8_code(float x, float inv, bool fp8) {
  const float v = quant::mul(x, inv);
  if (fp8) return quant::e4m3_code(v);
#ifdef __CUDA_ARCH__
  float q = rintf(v);
#else
  float q = std::nearbyint(v);
#endif
  q = q < -127.f ? -127.f : q > 127.f ? 127.f : q;
  return static_cast<uint8_t>(static_cast<int8_t>(q));
}

// A code's value (before the scale).
KS_HD float w8_value(uint8_t c, bool fp8) {
  return fp8 ? quant::e4m3_value(c) : static_cast<float>(static_cast<int8_t>(c));
}

// Row x of K floats as codes of I8 (fp8 false) or F8E4M3; returns the row's scale.
float w8_quantize_row(const float* x, int64_t K, bool fp8, uint8_t* codes);

// A host matrix (any float type, [N, K]) as W8A8 weights of type t: codes [N, K] of t and f32 scales [N].
struct W8Matrix {
  Tensor codes;
  Tensor scales;
};
W8Matrix quantize_w8_rows(const Tensor& w, DType t);

// Row x of K floats as the matmul quantizes it: writes the codes' values times the row's scale (what the
// products see) to out and returns the scale.
float w8_fake_quantize_row(const float* x, int64_t K, bool fp8, float* out);

}  // namespace kestrel
