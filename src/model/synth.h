// Synthetic models: Hugging Face directories with the real shapes of well-known models and deterministic
// random weights, so real-size performance work needs no download. The directory holds config.json,
// model.safetensors (sharded with an index when large), a small but working byte-level BPE
// tokenizer.json padded to the preset's vocabulary, tokenizer_config.json and generation_config.json;
// it loads in Kestrel and in transformers alike.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/dtype.h"

namespace kestrel {

struct SynthPreset {
  std::string name;        // "llama3-8b"
  std::string model_type;  // config.json "model_type": llama, mistral, qwen2, qwen3, gemma3_text
  int n_layers = 0, hidden = 0, ffn = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, vocab = 0;
  int max_pos = 0;
  float rope_theta = 10000.f;
  float rms_eps = 1e-5f;
  float llama3_rope_factor = 0.f;  // > 0: "rope_type": "llama3" scaling (Llama 3.1/3.2)
  int llama3_original_max_pos = 8192;
  bool tied_embeddings = false;
  bool qkv_bias = false;  // Qwen2
  bool qk_norm = false;   // Qwen3
  // Gemma 3 (model_type gemma3_text; q/k norm, GeGLU and sandwich norms come with the type): every
  // sliding_period-th layer is global, the others see the last sliding_window positions.
  int sliding_window = 0;
  int sliding_period = 6;
  float rope_local_theta = 10000.f;
};

// Every preset; the real models' shapes plus `tiny` and `small` for tests.
const std::vector<SynthPreset>& synth_presets();
// Throws kestrel::Error listing the presets when `name` is unknown.
const SynthPreset& synth_preset(std::string_view name);

struct SynthOptions {
  uint64_t seed = 0;
  DType dtype = DType::BF16;                                    // bf16, f16 or f32
  uint64_t max_shard_bytes = 4ull << 30;                        // larger models are split into shards with an index
  int threads = 0;                                              // 0: all cores
  std::function<void(uint64_t done, uint64_t total)> progress;  // bytes of tensor data written
};

struct SynthSummary {
  uint64_t tensor_bytes = 0;
  int shards = 0;
  int64_t parameters = 0;
};

// Writes the model directory `out_dir` (created if missing; files of the same names are replaced).
SynthSummary write_synth_model(const SynthPreset& preset, const std::string& out_dir, const SynthOptions& opt);

// The parts of the directory, exposed for tests.
nlohmann::json synth_config_json(const SynthPreset& p, DType dtype);
nlohmann::json synth_tokenizer_json(const SynthPreset& p);
nlohmann::json synth_tokenizer_config_json(const SynthPreset& p);
// Ids of the BOS token (-1: the family adds none) and of the end-of-generation token.
std::pair<int, int> synth_bos_eos(const SynthPreset& p);

// The deterministic weight stream: element i of tensor `tensor_index` as a standard normal draw
// (mean 0, variance 1) for a seed. Counter-based, so any range of any tensor can be generated on any
// thread in any order.
float synth_normal(uint64_t seed, uint64_t tensor_index, uint64_t i);

}  // namespace kestrel
