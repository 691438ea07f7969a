// Hyper-parameters of a decoder-only transformer, filled from GGUF metadata or config.json.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

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
  // Gemma 3 and relatives (architecture.h); the defaults are the Llama block's.
  bool post_norms = false;              // RMSNorm of the attention and MLP outputs before their residual adds
  bool gelu = false;                    // GeGLU MLP instead of SwiGLU
  float embed_scale = 1.f;              // the embedding rows are multiplied by it (Gemma: sqrt(hidden))
  float attn_scale = 0.f;               // softmax scale of q.k; 0: 1/sqrt(head_dim)
  int sliding_window = 0;               // the window of the layers marked in sliding_layers
  std::vector<uint8_t> sliding_layers;  // per layer, 1: sliding-window attention (empty: none are)
  ops::RopeParams rope_local;           // the RoPE of the sliding layers

  bool is_sliding(int layer) const {
    return sliding_window > 0 && static_cast<size_t>(layer) < sliding_layers.size() && sliding_layers[layer];
  }
  bool has_sliding_layers() const;
  // Windowed attention of `window` on the layers `sliding` marks (1 per layer), the local RoPE sharing the
  // global one's layout at base `local_theta`, unscaled (loaders add a scaling the file gives).
  void set_sliding(int window, std::vector<uint8_t> sliding, float local_theta);
  // Gemma's layer pattern: every layer but each period-th is windowed.
  static std::vector<uint8_t> sliding_period(int n_layers, int period);
  const ops::RopeParams& rope_of(int layer) const { return is_sliding(layer) ? rope_local : rope; }
  float attention_scale() const;

  // Checks the numbers are consistent; throws kestrel::Error naming the field otherwise.
  void validate() const;
  // The context a run gets for `requested` tokens (0: the model's trained length, at most 8192); warns
  // once when a request goes past the trained length, where the model was never evaluated.
  int context_size(int requested) const;
};

}  // namespace kestrel
