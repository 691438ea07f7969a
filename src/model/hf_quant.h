// Hugging Face GPTQ and AWQ checkpoints: what a model directory says about its quantization, and the
// conversion of one quantized linear (qweight, qzeros, scales, g_idx) into Kestrel's grouped integer format
// (core/linear.h). docs/quantized_checkpoints.md describes both layouts and the fields read.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "core/linear.h"

namespace kestrel {

class SafetensorsModel;

struct HfQuantization {
  enum class Method : uint8_t { Gptq, Awq };
  Method method = Method::Gptq;
  int bits = 4;
  int64_t group_size = 128;      // -1: one group per output channel
  bool desc_act = false;         // GPTQ act-order: every quantized linear must have its g_idx
  bool sym = false;              // GPTQ: every zero point is 2^(bits-1) (loaded as the symmetric format)
  int zero_offset = 0;           // added to stored zero points: 1 for AutoGPTQ's "stored zero = zero - 1"
  std::string describe() const;  // "GPTQ 4-bit, groups of 128, asymmetric (zero points stored minus one)"
};

// The quantization of the model in `dir`: config.json's quantization_config, else AutoGPTQ's separate
// quantize_config.json; nullopt when there is neither. Throws kestrel::Error naming the field for what the
// loader does not read (another method, other bits, a kernel's repacked layout, per-module overrides).
std::optional<HfQuantization> hf_quantization(const nlohmann::json& config, const std::string& dir);

// The linear stored under `prefix` ("model.layers.0.self_attn.q_proj" with .qweight, .qzeros, .scales and,
// for GPTQ, .g_idx) as a grouped integer linear on the host; throws naming the tensor when a part is missing,
// of the wrong type or shape, or (sym) its zero points are not symmetric.
Linear read_quantized_linear(const SafetensorsModel& st, const std::string& prefix, const HfQuantization& q);

}  // namespace kestrel
