#include "model/hf_model.h"

#include "core/error.h"
#include "formats/safetensors.h"

namespace kestrel {
namespace {

template <typename T>
T field(const nlohmann::json& j, const char* name, const std::string& where) {
  auto it = j.find(name);
  KS_CHECK(it != j.end() && !it->is_null(), "{}: config.json has no '{}'", where, name);
  try {
    return it->get<T>();
  } catch (const nlohmann::json::exception&) {
    KS_FAIL("{}: config.json field '{}' has the wrong type ({})", where, name, it->type_name());
  }
}

template <typename T>
T field_or(const nlohmann::json& j, const char* name, T def, const std::string& where) {
  auto it = j.find(name);
  return it == j.end() || it->is_null() ? def : field<T>(j, name, where);
}

}  // namespace

bool HfWeights::has(const std::string& name) const {
  const std::string hf = hf_tensor_name(name);
  return !hf.empty() && st_->has(hf);
}

Tensor HfWeights::get(const std::string& name) const {
  const std::string hf = hf_tensor_name(name);
  KS_CHECK(!hf.empty(), "tensor '{}' has no Hugging Face name", name);
  return st_->tensor(hf);
}

ModelConfig config_from_hf(const nlohmann::json& j, const Architecture& arch, const std::string& where) {
  KS_CHECK(j.is_object(), "{}: config.json is not a JSON object", where);
  ModelConfig c;
  c.arch = std::string(arch.name);
  c.name = field_or<std::string>(j, "_name_or_path", "", where);
  c.n_layers = field<int>(j, "num_hidden_layers", where);
  c.hidden = field<int>(j, "hidden_size", where);
  c.ffn = field<int>(j, "intermediate_size", where);
  c.n_heads = field<int>(j, "num_attention_heads", where);
  c.n_kv_heads = field_or<int>(j, "num_key_value_heads", c.n_heads, where);
  KS_CHECK(c.n_heads > 0, "{}: num_attention_heads must be positive", where);
  c.head_dim = field_or<int>(j, "head_dim", c.hidden / c.n_heads, where);
  c.vocab = field<int>(j, "vocab_size", where);
  c.max_ctx = field_or<int>(j, "max_position_embeddings", 4096, where);
  c.rms_eps = field_or<float>(j, "rms_norm_eps", 1e-6f, where);
  c.tied_embeddings = field_or<bool>(j, "tie_word_embeddings", false, where);
  c.qkv_bias = arch.qkv_bias || field_or<bool>(j, "attention_bias", false, where);
  c.qk_norm = arch.qk_norm;

  c.rope.style = ops::RopeParams::Style::HalfSplit;
  // transformers < 5 writes rope_theta + rope_scaling; 5.x writes one rope_parameters object.
  const auto params = j.find("rope_parameters");
  const bool has_params = params != j.end() && params->is_object();
  c.rope.theta = has_params ? field_or<float>(*params, "rope_theta", field_or<float>(j, "rope_theta", 10000.f, where), where)
                            : field_or<float>(j, "rope_theta", 10000.f, where);
  c.rope.rot_dim = static_cast<int>(c.head_dim * field_or<float>(j, "partial_rotary_factor", 1.f, where));
  auto scaling = j.find("rope_scaling");
  if (scaling == j.end() || scaling->is_null()) scaling = has_params ? params : j.end();
  if (auto it = scaling; it != j.end() && !it->is_null()) {
    KS_CHECK(it->is_object(), "{}: rope_scaling must be an object", where);
    const std::string type = field_or<std::string>(*it, "rope_type", field_or<std::string>(*it, "type", "", where), where);
    if (type == "llama3") {
      c.rope.llama3_factor = field<float>(*it, "factor", where);
      c.rope.llama3_low_freq_factor = field_or<float>(*it, "low_freq_factor", 1.f, where);
      c.rope.llama3_high_freq_factor = field_or<float>(*it, "high_freq_factor", 4.f, where);
      c.rope.llama3_original_max_pos = field_or<int>(*it, "original_max_position_embeddings", 8192, where);
      KS_CHECK(c.rope.llama3_factor > 0 && c.rope.llama3_high_freq_factor > c.rope.llama3_low_freq_factor,
               "{}: invalid llama3 rope_scaling", where);
    } else if (type == "linear") {
      c.rope.linear_factor = field<float>(*it, "factor", where);
      KS_CHECK(c.rope.linear_factor > 0, "{}: linear rope_scaling factor must be positive", where);
    } else {
      KS_CHECK(type == "default" || type.empty(), "{}: rope_scaling type '{}' is not supported (llama3, linear)",
               where, type);
    }
  }
  c.validate();
  return c;
}

}  // namespace kestrel
