// The weight operand of a linear layer (y = x W^T): its storage, the format descriptor a kernel needs to read
// it, and which linear of the model it is. ops::matmul takes one; a backend variant's capability check says
// which formats and layouts it reads.
//
// Formats:
//  - dense: `weight` is W itself, [N, K] of a float type or a GGUF block type; its dtype is the whole
//    descriptor (no separate parameters).
//  - grouped integer ("W{2,3,4,8}A16"): `weight` holds b-bit unsigned codes [N, K] of a code type (U2, U3,
//    U4, U8; core/int_codes.h), and `groups` an f16 scale and zero point per output channel and group of
//    input channels:
//        W[n, k] = (code[n, k] - zero[n, g]) * scale[n, g],  g = g_idx[k] if set, else k / group_size,
//    computed in f32 (exact for integer zero points: an f16 scale times an integer of at most 9 bits).
//    Without zeros the format is symmetric: zero = 2^(b-1). g_idx is GPTQ's act-order: the input channels
//    were quantized in another order, so a group's channels need not be adjacent.
//  - scaled 8-bit ("W8A8"): `weight` holds I8 (symmetric, -127..127) or F8E4M3 codes [N, K] and
//    `channel_scales` one f32 scale per output channel: W[n, k] = weight[n, k] * channel_scale[n]. The
//    product quantizes each row of x to the same type first (core/w8a8.h: one f32 scale per row), so
//        y[m, n] = x_scale[m] * channel_scale[n] * sum_k x_code[m, k] * weight[n, k].
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/tensor.h"

namespace kestrel {

// Which projection a linear is, by its GGUF tensor name's role.
enum class LinearRole : uint8_t { Q, K, V, QKV, O, Gate, Up, GateUp, Down, Output };
std::string_view linear_role_name(LinearRole r);  // "attn_q", ..., "ffn_gate_up", "output"

// A linear's identity, stable across loads and devices: for calibration and per-linear choices.
struct LinearId {
  int layer = -1;  // -1: outside the blocks (the output projection)
  LinearRole role = LinearRole::Output;
  std::string name() const;  // "blk.3.attn_q", "output"
  bool operator==(const LinearId&) const = default;
};

// How `weight` is laid out in memory: rows of input channels, as the formats above say. A kernel that
// repacks weights at load adds its own tag; every kernel checks that it reads the layout it was given.
enum class WeightLayout : uint8_t { Rows };

// The parameters of the grouped integer format (all on the weight's device).
struct IntGroups {
  int64_t group_size = 0;  // input channels per group: K for one group per output channel
  Tensor scales;           // f16 [N, G]
  Tensor zeros;            // f16 [N, G], integers in [0, 2^b] (a GPTQ zero point can reach 2^b); empty: symmetric
  Tensor g_idx;            // i32 [K], each in [0, G): the group of input channel k; empty: k / group_size
};

struct Linear {
  Tensor weight;
  IntGroups groups;       // grouped integer formats only
  Tensor channel_scales;  // scaled 8-bit formats only: f32 [N] on the weight's device
  WeightLayout layout = WeightLayout::Rows;
  LinearId id;

  Linear() = default;
  // A dense linear. Implicit because a float or GGUF-typed matrix is a complete operand by itself: tools and
  // tests multiply bare tensors. Code types are refused: their codes mean nothing without the groups.
  Linear(Tensor w);  // NOLINT(google-explicit-constructor)
  // A grouped integer linear; throws kestrel::Error naming `id` when the parts disagree (types, shapes, g_idx
  // values out of range: checked here for host tensors).
  static Linear grouped(Tensor codes, IntGroups groups, LinearId id = {});
  // A scaled 8-bit (W8A8) linear; throws kestrel::Error naming `id` when the parts disagree.
  static Linear scaled(Tensor codes, Tensor channel_scales, LinearId id = {});

  bool empty() const { return weight.empty(); }
  bool grouped() const { return !groups.scales.empty(); }
  bool scaled() const { return !channel_scales.empty(); }
  bool dense() const { return !grouped() && !scaled(); }
  int64_t out_features() const { return weight.rows(); }  // N
  int64_t in_features() const { return weight.cols(); }   // K
  int bits() const;                                       // of the codes; 0 when dense
  int64_t n_groups() const { return groups.scales.empty() ? 0 : groups.scales.cols(); }
  size_t nbytes() const;  // the weight and its group tensors
  // "q4_k[576, 1536]"; grouped: "u4[576, 1536] g128 asym act-order"; scaled: "i8[576, 1536] w8a8".
  std::string describe() const;
  // Calls f(const Tensor&) on the weight and each group tensor present.
  template <typename F>
  void for_each_tensor(F&& f) const {
    for (const Tensor* t : {&weight, &groups.scales, &groups.zeros, &groups.g_idx, &channel_scales})
      if (!t->empty()) f(*t);
  }
};

// Row n of a host linear as K f32 values (grouped formats decode with their scales and zero points, scaled
// ones with their channel scale).
void dequantize_row(const Linear& w, int64_t n, float* out);

}  // namespace kestrel
