// Hyper-parameters of a decoder-only transformer, filled from GGUF metadata or config.json.
#pragma once

#include <cstdint>
#include <string>

#include "ops/ops.h"

namespace kestrel {

struct ModelConfig {
  std::string arch;  // architecture table key: "llama", "qwen2", "qwen3"
  std::string name;  // human-readable model name, when the file has one
  int n_layers = 0;
  int hidden = 0;
  int ffn = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int vocab = 0;
  int max_ctx = 0;  // trained context length
  float rms_eps = 1e-5f;
  ops::RopeParams rope;
  bool qkv_bias = false;         // Qwen2: biases on q/k/v projections
  bool qk_norm = false;          // Qwen3: RMSNorm over each q and k head before RoPE
  bool tied_embeddings = false;  // output projection reuses the token embedding

  // Checks the numbers are consistent; throws kestrel::Error naming the field otherwise.
  void validate() const;
  // The context a run gets for `requested` tokens (0: the model's trained length, at most 8192); warns
  // once when a request goes past the trained length, where the model was never evaluated.
  int context_size(int requested) const;
};

}  // namespace kestrel
