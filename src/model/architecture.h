// The architecture table. An architecture is data — which optional tensors it has and how its
// checkpoints lay out RoPE — plus the shared decoder forward (decoder.h). Adding a Llama-like family is
// one short file in model/arch/ and a line in architecture.cpp.
#pragma once

#include <string_view>
#include <vector>

#include "model/model_config.h"
#include "ops/ops.h"

namespace kestrel {

struct Architecture {
  std::string_view name;                         // Kestrel's name, also ModelConfig::arch
  std::vector<std::string_view> gguf_names;      // values of general.architecture
  std::vector<std::string_view> hf_model_types;  // values of config.json "model_type"
  // GGUF converters permute Q/K rows of llama-family models so RoPE rotates adjacent pairs; qwen-family
  // GGUFs keep the Hugging Face half-split layout. HF checkpoints are always half-split.
  ops::RopeParams::Style gguf_rope_style;
  bool qkv_bias;  // q/k/v projections carry biases
  bool qk_norm;   // per-head RMSNorm of q and k before RoPE
  // Whether a GGUF without output.weight is a tied model (the output projection is token_embd.weight).
  // GGUF has no tie_word_embeddings key: converters just omit output.weight, and llama.cpp decides per
  // architecture, loading output.weight as optional with the embedding as fallback (llama, qwen2, qwen3 in
  // llama-model.cpp) or as required (families that always ship their own head). Kestrel does the same.
  bool gguf_output_optional;

  // Gemma 3 and relatives; the defaults are the Llama block's.
  // "Sandwich" norms: the attention and MLP outputs are RMS-normalised before their residual adds
  // (post_attention_norm / post_ffw_norm in GGUF; HF calls the pre-MLP norm pre_feedforward_layernorm).
  bool post_norms = false;
  bool gelu = false;              // GeGLU MLP (tanh GELU) instead of SwiGLU
  bool embed_scale = false;       // embeddings are multiplied by sqrt(hidden) before the first block
  bool hf_norm_plus_one = false;  // HF checkpoints store RMSNorm weights w applied as (1 + w); GGUFs store 1 + w
  bool hf_tied_default = false;   // what a config.json without tie_word_embeddings means
  // Sliding-window layers: when a GGUF names no pattern, every layer but each `gguf_swa_period`-th is
  // windowed (0: no sliding layers); they rotate with this RoPE base (not in the GGUF either).
  int gguf_swa_period = 0;
  float swa_rope_theta = 10000.f;
};

// What a config takes from its architecture, whatever the file format: the name and the block's flags
// (biases, q/k norm, post-norms, GeGLU, the embedding scale; c.hidden must be set).
void apply_architecture(const Architecture& arch, ModelConfig& c);

const std::vector<const Architecture*>& architectures();
// Throw kestrel::Error listing the supported names when unknown.
const Architecture& architecture_for_gguf(std::string_view general_architecture);
const Architecture& architecture_for_hf(std::string_view model_type);

}  // namespace kestrel
