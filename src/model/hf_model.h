// Reading a decoder's configuration and weights out of a Hugging Face model directory
// (config.json + safetensors).
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "model/architecture.h"
#include "model/hf_quant.h"
#include "model/model_config.h"
#include "model/weight_source.h"

namespace kestrel {

class SafetensorsModel;

// Serves GGUF-style names from a safetensors directory by translating them to transformers' names, norm
// weights in the GGUF convention (Gemma's stored w become the 1 + w they are applied as), and the linears of a
// GPTQ or AWQ checkpoint (`quant`: hf_quant.h) in the grouped integer format.
class HfWeights : public WeightSource {
 public:
  HfWeights(std::shared_ptr<const SafetensorsModel> st, const Architecture& arch,
            std::optional<HfQuantization> quant = std::nullopt)
      : st_(std::move(st)), arch_(&arch), quant_(std::move(quant)) {}
  bool has(const std::string& name) const override;
  Tensor get(const std::string& name) const override;
  // A linear stored quantized (a ".qweight" beside where ".weight" would be) comes back grouped.
  Linear linear(const std::string& name) const override;
  std::string file_name(const std::string& name) const override { return hf_tensor_name(name, arch_->post_norms); }

 private:
  // The HF prefix of a quantized linear named `name` ("model.layers.0.self_attn.q_proj"), or empty.
  std::string quantized_prefix(const std::string& name) const;

  std::shared_ptr<const SafetensorsModel> st_;
  const Architecture* arch_;
  std::optional<HfQuantization> quant_;
};

// Hyper-parameters from config.json (transformers' field names and defaults).
ModelConfig config_from_hf(const nlohmann::json& config, const Architecture& arch, const std::string& where);

}  // namespace kestrel
