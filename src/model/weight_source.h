// Where a model's tensors come from (a GGUF file or a Hugging Face safetensors directory), behind one
// interface so architecture code is format-agnostic. Names passed in are GGUF-style ("blk.3.attn_q.weight");
// each source translates them to its own naming.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/linear.h"
#include "core/tensor.h"

namespace kestrel {

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual bool has(const std::string& name) const = 0;
  // Throws kestrel::Error naming the tensor and the file when it is missing or unreadable.
  virtual Tensor get(const std::string& name) const = 0;
  // The linear weight `name` ("blk.3.attn_q.weight") as an operand: the tensor itself (a dense linear) unless
  // the source stores it in a quantized format of its own, which it converts to a grouped linear. Its id is
  // the caller's to set.
  virtual Linear linear(const std::string& name) const { return Linear(get(name)); }
  // The tensor's name in the file, for messages.
  virtual std::string file_name(const std::string& name) const { return name; }
};

// Maps a GGUF-style tensor name to the Hugging Face transformers name ("blk.3.attn_q.weight" ->
// "model.layers.3.self_attn.q_proj.weight"); returns empty if the name has no HF counterpart. With
// `post_norms` (Gemma's sandwich norms) the per-block norms are named as in those models:
// post_attention_layernorm is then the attention output's norm, and the pre-MLP norm is
// pre_feedforward_layernorm.
std::string hf_tensor_name(const std::string& gguf_name, bool post_norms = false);

}  // namespace kestrel
