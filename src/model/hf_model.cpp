#include "model/hf_model.h"

#include <cmath>
#include <limits>

#include "core/dequant.h"
#include "core/error.h"
#include "formats/hf_config.h"
#include "formats/safetensors.h"

namespace kestrel {
namespace {

const nlohmann::json& required(const nlohmann::json& j, const char* name, const std::string& where) {
  const nlohmann::json* v = json_field(j, name);
  KS_CHECK(v, "{}: config.json has no '{}'", where, name);
  return *v;
}

// Sizes and counts: positive and within int, checked before any conversion (hf_config.h says why).
int int_field(const nlohmann::json& j, const char* name, const std::string& where) {
  return static_cast<int>(json_int(required(j, name, where), name, where, 1, std::numeric_limits<int>::max()));
}

int int_field_or(const nlohmann::json& j, const char* name, int def, const std::string& where) {
  return json_field(j, name) ? int_field(j, name, where) : def;
}

float float_field(const nlohmann::json& j, const char* name, const std::string& where) {
  return json_float(required(j, name, where), name, where);
}

float float_field_or(const nlohmann::json& j, const char* name, float def, const std::string& where) {
  return json_field(j, name) ? float_field(j, name, where) : def;
}

// Scaling of one RoPE from a rope_scaling object (transformers < 5) or a rope_parameters entry (5.x).
void apply_rope_scaling(const nlohmann::json& it, ops::RopeParams& rope, const std::string& where) {
  KS_CHECK(it.is_object(), "{}: rope_scaling must be an object", where);
  const std::string type =
      json_field_or<std::string>(it, "rope_type", json_field_or<std::string>(it, "type", "", where), where);
  if (type == "llama3") {
    rope.llama3_factor = float_field(it, "factor", where);
    rope.llama3_low_freq_factor = float_field_or(it, "low_freq_factor", 1.f, where);
    rope.llama3_high_freq_factor = float_field_or(it, "high_freq_factor", 4.f, where);
    rope.llama3_original_max_pos = int_field_or(it, "original_max_position_embeddings", 8192, where);
    KS_CHECK(rope.llama3_factor > 0 && rope.llama3_high_freq_factor > rope.llama3_low_freq_factor,
             "{}: invalid llama3 rope_scaling", where);
  } else if (type == "linear") {
    rope.linear_factor = float_field(it, "factor", where);
    KS_CHECK(rope.linear_factor > 0, "{}: linear rope_scaling factor must be positive", where);
  } else {
    KS_CHECK(type == "default" || type.empty(), "{}: rope_scaling type '{}' is not supported (llama3, linear)", where,
             type);
  }
}

// The sliding-window layers of a Gemma-3-style config: "layer_types" (transformers >= 4.53) or every layer
// but each sliding_window_pattern-th; their RoPE from 5.x's rope_parameters entry `local`, or
// rope_local_base_freq.
void read_sliding_layers(const nlohmann::json& j, const Architecture& arch, const nlohmann::json* local, ModelConfig& c,
                         const std::string& where) {
  const int window = int_field_or(j, "sliding_window", 0, where);
  if (window == 0) return;
  std::vector<uint8_t> sliding;
  if (const nlohmann::json* types = json_field(j, "layer_types")) {
    KS_CHECK(types->is_array() && types->size() == static_cast<size_t>(c.n_layers),
             "{}: layer_types must list one type per layer ({})", where, c.n_layers);
    for (int l = 0; l < c.n_layers; ++l) {
      const nlohmann::json& t = (*types)[l];
      KS_CHECK(t == "sliding_attention" || t == "full_attention",
               "{}: layer_types[{}] must be \"sliding_attention\" or \"full_attention\"", where, l);
      sliding.push_back(t == "sliding_attention");
    }
  } else {
    sliding =
        ModelConfig::sliding_period(c.n_layers, int_field_or(j, "sliding_window_pattern", arch.gguf_swa_period, where));
  }
  c.set_sliding(window, std::move(sliding),
                local ? float_field_or(*local, "rope_theta", arch.swa_rope_theta, where)
                      : float_field_or(j, "rope_local_base_freq", arch.swa_rope_theta, where));
  if (local) apply_rope_scaling(*local, c.rope_local, where);
}

// What Gemma 3 adds to the Llama block, from its config.json (after the global RoPE is read).
void read_gemma_fields(const nlohmann::json& j, const Architecture& arch, const nlohmann::json* local_rope,
                       ModelConfig& c, const std::string& where) {
  if (arch.gelu) {
    const std::string act = json_field_or<std::string>(
        j, "hidden_activation", json_field_or<std::string>(j, "hidden_act", "gelu_pytorch_tanh", where), where);
    KS_CHECK(act == "gelu_pytorch_tanh", "{}: hidden_activation '{}' is not supported (gelu_pytorch_tanh)", where, act);
  }
  for (const char* cap : {"attn_logit_softcapping", "final_logit_softcapping"})
    KS_CHECK(!json_field(j, cap), "{}: '{}' is set; logit soft-capping (Gemma 2) is not supported", where, cap);
  if (json_field(j, "query_pre_attn_scalar")) {
    const float s = float_field(j, "query_pre_attn_scalar", where);
    KS_CHECK(s > 0, "{}: query_pre_attn_scalar must be positive", where);
    c.attn_scale = 1.f / std::sqrt(s);
  }
  if (arch.gguf_swa_period > 0) read_sliding_layers(j, arch, local_rope, c, where);
}

}  // namespace

bool HfWeights::has(const std::string& name) const {
  const std::string hf = hf_tensor_name(name, arch_->post_norms);
  return !hf.empty() && (st_->has(hf) || !quantized_prefix(name).empty());
}

std::string HfWeights::quantized_prefix(const std::string& name) const {
  const std::string hf = hf_tensor_name(name, arch_->post_norms);
  if (!hf.ends_with(".weight")) return {};
  std::string prefix = hf.substr(0, hf.size() - 7);
  return st_->has(prefix + ".qweight") ? prefix : std::string();
}

Linear HfWeights::linear(const std::string& name) const {
  const std::string prefix = quantized_prefix(name);
  if (prefix.empty()) return Linear(get(name));
  KS_CHECK(quant_, "'{}' stores '{}' quantized ({}.qweight), but config.json has no quantization_config", st_->path(),
           prefix, prefix);
  return read_quantized_linear(*st_, prefix, *quant_);
}

Tensor HfWeights::get(const std::string& name) const {
  const std::string hf = hf_tensor_name(name, arch_->post_norms);
  KS_CHECK(!hf.empty(), "tensor '{}' has no Hugging Face name", name);
  Tensor t = st_->tensor(hf);
  if (!arch_->hf_norm_plus_one || !std::string_view(name).ends_with("norm.weight")) return t;
  Tensor f = Tensor::empty_host(DType::F32, t.shape);
  dequantize_row(t.dtype, t.data, f.ptr<float>(), t.numel());
  for (int64_t i = 0; i < f.numel(); ++i) f.ptr<float>()[i] += 1.f;
  return f;
}

ModelConfig config_from_hf(const nlohmann::json& j, const Architecture& arch, const std::string& where) {
  KS_CHECK(j.is_object(), "{}: config.json is not a JSON object", where);
  ModelConfig c;
  c.name = json_field_or<std::string>(j, "_name_or_path", "", where);
  c.n_layers = int_field(j, "num_hidden_layers", where);
  c.hidden = int_field(j, "hidden_size", where);
  c.ffn = int_field(j, "intermediate_size", where);
  c.n_heads = int_field(j, "num_attention_heads", where);
  c.n_kv_heads = int_field_or(j, "num_key_value_heads", c.n_heads, where);
  c.head_dim = int_field_or(j, "head_dim", c.hidden / c.n_heads, where);
  c.vocab = int_field(j, "vocab_size", where);
  c.max_ctx = int_field_or(j, "max_position_embeddings", 4096, where);
  c.rms_eps = float_field_or(j, "rms_norm_eps", 1e-6f, where);
  // Unset means the config class's default: tied for Gemma (Gemma3TextConfig), untied for the Llama family.
  c.tied_embeddings = json_field_or<bool>(j, "tie_word_embeddings", arch.hf_tied_default, where);
  apply_architecture(arch, c);
  c.qkv_bias = c.qkv_bias || json_field_or<bool>(j, "attention_bias", false, where);

  c.rope.style = ops::RopeParams::Style::HalfSplit;
  // transformers < 5 writes rope_theta + rope_scaling; 5.x writes one rope_parameters object, or for models
  // with sliding-window layers (Gemma 3) one per layer type.
  const nlohmann::json* params = json_field(j, "rope_parameters");
  if (params && !params->is_object()) params = nullptr;
  const nlohmann::json* full = params ? json_field(*params, "full_attention") : nullptr;
  const nlohmann::json* local = params ? json_field(*params, "sliding_attention") : nullptr;
  if (!full) full = params;
  const float theta = float_field_or(j, "rope_theta", 10000.f, where);
  c.rope.theta = full ? float_field_or(*full, "rope_theta", theta, where) : theta;
  const float rotary = float_field_or(j, "partial_rotary_factor", 1.f, where);
  KS_CHECK(rotary > 0 && rotary <= 1, "{}: 'partial_rotary_factor' must be in (0, 1], got {}", where, rotary);
  c.rope.rot_dim = static_cast<int>(c.head_dim * rotary);
  const nlohmann::json* scaling = json_field(j, "rope_scaling");
  if (!scaling) scaling = full;
  if (scaling) apply_rope_scaling(*scaling, c.rope, where);

  read_gemma_fields(j, arch, local, c, where);
  c.validate();
  return c;
}

}  // namespace kestrel
