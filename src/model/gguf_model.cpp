#include "model/gguf_model.h"

#include <cmath>
#include <limits>

#include "core/dequant.h"
#include "core/error.h"

namespace kestrel {

ModelConfig config_from_gguf(const GgufFile& f, const Architecture& arch) {
  const std::string a = f.get_string("general.architecture");
  auto key = [&](const char* k) { return a + "." + k; };
  ModelConfig c;
  c.name = f.get_string("general.name", "");
  // Signed 32-bit reads: a u32 above INT_MAX is an error naming the key, not a negative size.
  c.n_layers = f.get_i32(key("block_count"));
  c.hidden = f.get_i32(key("embedding_length"));
  c.ffn = f.get_i32(key("feed_forward_length"));
  c.n_heads = f.get_i32(key("attention.head_count"));
  c.n_kv_heads = f.get_i32(key("attention.head_count_kv"), c.n_heads);
  KS_CHECK(c.n_heads > 0, "{}: {} is {}", f.path(), key("attention.head_count"), c.n_heads);
  c.head_dim = f.get_i32(key("attention.key_length"), c.hidden / c.n_heads);
  c.max_ctx = f.get_i32(key("context_length"), 4096);
  c.rms_eps = f.get_f32(key("attention.layer_norm_rms_epsilon"), 1e-5f);

  KS_CHECK(f.has_tensor("token_embd.weight"), "{}: no token_embd.weight tensor", f.path());
  const auto* embd = f.find_tensor("token_embd.weight");
  KS_CHECK(embd->shape.size() == 2 && embd->shape[0] <= std::numeric_limits<int>::max(),
           "{}: token_embd.weight must be [vocab, hidden] with vocab below 2^31", f.path());
  c.vocab = static_cast<int>(embd->shape[0]);
  c.tied_embeddings = !f.has_tensor("output.weight");
  KS_CHECK(!c.tied_embeddings || arch.gguf_output_optional,
           "{}: no output.weight tensor, and {} models do not reuse token_embd.weight as the output projection",
           f.path(), a);
  apply_architecture(arch, c);

  c.rope.style = arch.gguf_rope_style;
  c.rope.rot_dim = f.get_i32(key("rope.dimension_count"), c.head_dim);
  c.rope.theta = f.get_f32(key("rope.freq_base"), 10000.f);
  const std::string scaling = f.get_string(key("rope.scaling.type"), "none");
  if (scaling == "linear") {
    c.rope.linear_factor = f.get_f32(key("rope.scaling.factor"), 1.f);
  } else {
    KS_CHECK(scaling == "none", "{}: RoPE scaling '{}' is not supported (supported: none, linear, llama3)", f.path(),
             scaling);
  }
  // llama.cpp's converter stores Llama-3.1 scaling as per-pair frequency divisors.
  if (f.has_tensor("rope_freqs.weight")) {
    Tensor t = f.tensor("rope_freqs.weight");
    KS_CHECK(t.numel() == c.rope.rot_dim / 2, "{}: rope_freqs.weight has {} values, expected {}", f.path(), t.numel(),
             c.rope.rot_dim / 2);
    c.rope.freq_factors.resize(t.numel());
    dequantize_row(t.dtype, t.data, c.rope.freq_factors.data(), t.numel());
  }

  // llama.cpp's rule for Gemma 3: q.k is scaled by 1/sqrt(head_dim) (query_pre_attn_scalar in the HF config),
  // except in the 27B model (62 layers), whose scalar is hidden / n_heads.
  if (arch.name == "gemma3" && c.n_layers == 62)
    c.attn_scale = 1.f / std::sqrt(static_cast<float>(c.hidden / c.n_heads));
  const int window = f.get_i32(key("attention.sliding_window"), 0);
  if (window > 0 && arch.gguf_swa_period > 0) {
    const int period = f.get_i32(key("attention.sliding_window_pattern"), arch.gguf_swa_period);
    KS_CHECK(period > 0, "{}: {} must be positive", f.path(), key("attention.sliding_window_pattern"));
    // The local layers rotate with the architecture's base and no scaling (llama.cpp's freq_base_swa and
    // freq_scale_swa = 1): a long-context scaling in the file is the global layers'.
    c.set_sliding(window, ModelConfig::sliding_period(c.n_layers, period), arch.swa_rope_theta);
  }
  c.validate();
  return c;
}

}  // namespace kestrel
