// Writing a Hugging Face GPTQ checkpoint (the layout hf_quant.h reads; docs/quantized_checkpoints.md,
// "Writing"): `kestrel quantize --method rtn|gptq|awq`'s output. The float model's directory is copied with
// its quantized linears replaced by qweight / qzeros / scales / g_idx, zero points stored as they are
// (checkpoint_format gptq_v2), and config.json given its quantization_config.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/int_quant.h"
#include "core/tensor.h"
#include "model/architecture.h"

namespace kestrel {

// Throws unless k inputs of b-bit codes fill whole 32-bit words, as GPTQ packs each column along its inputs.
void check_gptq_shape(int64_t k, int bits, const std::string& name);

// One linear's GPTQ tensors: qweight i32 [K·b/32, N], qzeros i32 [G, ⌈N·b/32⌉], scales f16 [G, N],
// g_idx i32 [K] (check_gptq_shape).
struct GptqTensors {
  Tensor qweight, qzeros, scales, g_idx;
};
GptqTensors pack_gptq(const quant::IntQuantized& q, const std::string& name);

struct GptqCheckpoint {
  std::map<std::string, quant::IntQuantized> linears;  // by GGUF-style weight name ("blk.0.attn_q.weight")
  // Float tensors whose values changed (AWQ's norms and biases with its scales folded in), by GGUF-style name,
  // in Kestrel's convention (a norm Gemma stores as w is given as the 1 + w it applies); written as f32.
  std::map<std::string, std::vector<float>> replaced;
  nlohmann::json quantization_config;  // bits, group_size, desc_act, sym, checkpoint_format ...
};

// Writes `out_dir` (created; files of the same names replaced) from the float Hugging Face model `in_dir`:
// model.safetensors with every tensor of the input, in its dtype, except the quantized linears' weights and
// the replaced tensors; config.json with quantization_config; the other small files (tokenizer,
// generation_config ...) copied. Throws naming the file or tensor.
void write_gptq_checkpoint(const GptqCheckpoint& c, const Architecture& arch, const std::string& in_dir,
                           const std::string& out_dir);

}  // namespace kestrel
