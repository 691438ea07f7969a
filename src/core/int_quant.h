// Integer weight quantization in groups along the input dimension, as GPTQ and AWQ checkpoints store it
// (Hugging Face's `quantization_config`): a [n, k] matrix (n output channels, k inputs) becomes b-bit
// codes q with, per output channel and group of `group` inputs, a scale s and an integer zero point z,
// w = s * (q - z). Symmetric groups fix z at 2^(b-1). Scales are rounded to f16 before the codes are
// chosen, so the codes are exact for the scale a checkpoint stores. With act-order (GPTQ's desc_act) the
// groups are formed over a permutation of the inputs and g_idx names each input's group.
// The algorithms that choose the codes: round to nearest (quantize_rtn), GPTQ (gptq.h), AWQ (awq.h).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/linear.h"

namespace kestrel::quant {

struct IntQuantSpec {
  int bits = 4;      // 2, 3, 4 or 8
  int group = 128;   // inputs per group; <= 0: one group per output channel (all k inputs)
  bool sym = false;  // symmetric: z = 2^(bits - 1)
  float clip = 1.f;  // the range quantized is the group's [min, max] scaled by this ratio (AWQ's clip search)
  int max_code() const { return (1 << bits) - 1; }
};

// Throws kestrel::Error naming the bad field (bits other than 2/3/4/8, a group that does not divide k).
void check_int_quant_spec(const IntQuantSpec& spec, int64_t k);

struct IntQuantized {
  int64_t n = 0, k = 0;
  IntQuantSpec spec;
  std::vector<uint8_t> codes;  // [n, k], one code per byte, in the input order
  std::vector<float> scales;   // [n, groups], each an f16 value
  std::vector<uint8_t> zeros;  // [n, groups]
  std::vector<int32_t> g_idx;  // [k]: the group of each input (act order); empty: input / group

  int64_t group_size() const { return spec.group > 0 ? spec.group : k; }
  int64_t groups() const { return k / group_size(); }
  int64_t group_of(int64_t input) const { return g_idx.empty() ? input / group_size() : g_idx[input]; }
  // w = s * (q - z), [n, k].
  std::vector<float> dequantize() const;
};

// q as the grouped integer linear (core/linear.h) a checkpoint of it loads as: packed codes, f16 scales,
// zero points (none when symmetric: the format's implied 2^(b-1) is the one q used) and act-order's g_idx.
Linear to_linear(const IntQuantized& q, LinearId id = {});

// One group's scale and zero point from its values: the range [min(min, 0), max(max, 0)] (0 is always
// representable, as in GPTQ's quantizer), times spec.clip; symmetric groups take +-max|x| * clip.
struct GroupParams {
  float scale;
  uint8_t zero;
};
GroupParams group_params(std::span<const float> values, const IntQuantSpec& spec);
// The code of x under p: clamp(round(x / s) + z, 0, max_code).
uint8_t quantize_value(float x, GroupParams p, const IntQuantSpec& spec);
inline float dequantize_value(uint8_t q, GroupParams p) {
  return p.scale * (static_cast<float>(q) - static_cast<float>(p.zero));
}

// Round to nearest: every group's params from its own values, every code the nearest.
IntQuantized quantize_rtn(std::span<const float> w, int64_t n, int64_t k, const IntQuantSpec& spec);

// The layer-output error a quantization leaves, tr((W - Q) H (W - Q)^T) with H = sum of x x^T over the
// calibration inputs ([k, k]): what GPTQ minimizes, summed over output channels.
double proxy_loss(std::span<const float> w, const IntQuantized& q, std::span<const double> hessian);

}  // namespace kestrel::quant
