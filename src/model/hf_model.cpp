#include "model/hf_model.h"

#include <limits>

#include "core/error.h"
#include "formats/hf_config.h"
#include "formats/safetensors.h"

namespace kestrel {
namespace {

// The value of `name`, or null when the key is missing or null (transformers treats both as unset).
const nlohmann::json* find_field(const nlohmann::json& j, const char* name) {
  auto it = j.find(name);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

const nlohmann::json& required(const nlohmann::json& j, const char* name, const std::string& where) {
  const nlohmann::json* v = find_field(j, name);
  KS_CHECK(v, "{}: config.json has no '{}'", where, name);
  return *v;
}

// Sizes and counts: positive and within int, checked before any conversion (hf_config.h says why).
int int_field(const nlohmann::json& j, const char* name, const std::string& where) {
  return static_cast<int>(json_int(required(j, name, where), name, where, 1, std::numeric_limits<int>::max()));
}

int int_field_or(const nlohmann::json& j, const char* name, int def, const std::string& where) {
  return find_field(j, name) ? int_field(j, name, where) : def;
}

float float_field(const nlohmann::json& j, const char* name, const std::string& where) {
  return json_float(required(j, name, where), name, where);
}

float float_field_or(const nlohmann::json& j, const char* name, float def, const std::string& where) {
  return find_field(j, name) ? float_field(j, name, where) : def;
}

// Strings and booleans: nlohmann's get<> does not convert between JSON types, so a wrong type throws.
template <typename T>
T field_or(const nlohmann::json& j, const char* name, T def, const std::string& where) {
  const nlohmann::json* v = find_field(j, name);
  if (!v) return def;
  try {
    return v->get<T>();
  } catch (const nlohmann::json::exception&) {
    KS_FAIL("{}: config.json field '{}' has the wrong type ({})", where, name, v->type_name());
  }
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
  c.n_layers = int_field(j, "num_hidden_layers", where);
  c.hidden = int_field(j, "hidden_size", where);
  c.ffn = int_field(j, "intermediate_size", where);
  c.n_heads = int_field(j, "num_attention_heads", where);
  c.n_kv_heads = int_field_or(j, "num_key_value_heads", c.n_heads, where);
  c.head_dim = int_field_or(j, "head_dim", c.hidden / c.n_heads, where);
  c.vocab = int_field(j, "vocab_size", where);
  c.max_ctx = int_field_or(j, "max_position_embeddings", 4096, where);
  c.rms_eps = float_field_or(j, "rms_norm_eps", 1e-6f, where);
  c.tied_embeddings = field_or<bool>(j, "tie_word_embeddings", false, where);
  c.qkv_bias = arch.qkv_bias || field_or<bool>(j, "attention_bias", false, where);
  c.qk_norm = arch.qk_norm;

  c.rope.style = ops::RopeParams::Style::HalfSplit;
  // transformers < 5 writes rope_theta + rope_scaling; 5.x writes one rope_parameters object.
  const auto params = j.find("rope_parameters");
  const bool has_params = params != j.end() && params->is_object();
  const float theta = float_field_or(j, "rope_theta", 10000.f, where);
  c.rope.theta = has_params ? float_field_or(*params, "rope_theta", theta, where) : theta;
  const float rotary = float_field_or(j, "partial_rotary_factor", 1.f, where);
  KS_CHECK(rotary > 0 && rotary <= 1, "{}: 'partial_rotary_factor' must be in (0, 1], got {}", where, rotary);
  c.rope.rot_dim = static_cast<int>(c.head_dim * rotary);
  auto scaling = j.find("rope_scaling");
  if (scaling == j.end() || scaling->is_null()) scaling = has_params ? params : j.end();
  if (auto it = scaling; it != j.end() && !it->is_null()) {
    KS_CHECK(it->is_object(), "{}: rope_scaling must be an object", where);
    const std::string type =
        field_or<std::string>(*it, "rope_type", field_or<std::string>(*it, "type", "", where), where);
    if (type == "llama3") {
      c.rope.llama3_factor = float_field(*it, "factor", where);
      c.rope.llama3_low_freq_factor = float_field_or(*it, "low_freq_factor", 1.f, where);
      c.rope.llama3_high_freq_factor = float_field_or(*it, "high_freq_factor", 4.f, where);
      c.rope.llama3_original_max_pos = int_field_or(*it, "original_max_position_embeddings", 8192, where);
      KS_CHECK(c.rope.llama3_factor > 0 && c.rope.llama3_high_freq_factor > c.rope.llama3_low_freq_factor,
               "{}: invalid llama3 rope_scaling", where);
    } else if (type == "linear") {
      c.rope.linear_factor = float_field(*it, "factor", where);
      KS_CHECK(c.rope.linear_factor > 0, "{}: linear rope_scaling factor must be positive", where);
    } else {
      KS_CHECK(type == "default" || type.empty(), "{}: rope_scaling type '{}' is not supported (llama3, linear)", where,
               type);
    }
  }
  c.validate();
  return c;
}

}  // namespace kestrel
