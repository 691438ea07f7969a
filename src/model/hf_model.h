// Reading a decoder's configuration and weights out of a Hugging Face model directory
// (config.json + safetensors).
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "model/architecture.h"
#include "model/model_config.h"
#include "model/weight_source.h"

namespace kestrel {

class SafetensorsModel;

// Serves GGUF-style names from a safetensors directory by translating them to transformers' names, and
// norm weights in the GGUF convention (Gemma's stored w become the 1 + w they are applied as).
class HfWeights : public WeightSource {
 public:
  HfWeights(std::shared_ptr<const SafetensorsModel> st, const Architecture& arch) : st_(std::move(st)), arch_(&arch) {}
  bool has(const std::string& name) const override;
  Tensor get(const std::string& name) const override;
  std::string file_name(const std::string& name) const override { return hf_tensor_name(name, arch_->post_norms); }

 private:
  std::shared_ptr<const SafetensorsModel> st_;
  const Architecture* arch_;
};

// Hyper-parameters from config.json (transformers' field names and defaults).
ModelConfig config_from_hf(const nlohmann::json& config, const Architecture& arch, const std::string& where);

}  // namespace kestrel
