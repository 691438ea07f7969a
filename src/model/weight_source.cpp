#include "model/weight_source.h"

#include <array>
#include <string_view>
#include <utility>

namespace kestrel {

std::string hf_tensor_name(const std::string& gguf_name, bool post_norms) {
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 3> kGlobal = {{
      {"token_embd.weight", "model.embed_tokens.weight"},
      {"output_norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"},
  }};
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 15> kLayer = {{
      {"attn_norm.weight", "input_layernorm.weight"},
      {"attn_q.weight", "self_attn.q_proj.weight"},
      {"attn_k.weight", "self_attn.k_proj.weight"},
      {"attn_v.weight", "self_attn.v_proj.weight"},
      {"attn_q.bias", "self_attn.q_proj.bias"},
      {"attn_k.bias", "self_attn.k_proj.bias"},
      {"attn_v.bias", "self_attn.v_proj.bias"},
      {"attn_output.weight", "self_attn.o_proj.weight"},
      {"attn_q_norm.weight", "self_attn.q_norm.weight"},
      {"attn_k_norm.weight", "self_attn.k_norm.weight"},
      {"ffn_norm.weight", "post_attention_layernorm.weight"},
      {"ffn_gate.weight", "mlp.gate_proj.weight"},
      {"ffn_up.weight", "mlp.up_proj.weight"},
      {"ffn_down.weight", "mlp.down_proj.weight"},
      {"attn_output.bias", "self_attn.o_proj.bias"},
  }};
  for (const auto& [g, h] : kGlobal)
    if (gguf_name == g) return std::string(h);
  constexpr std::string_view kBlk = "blk.";
  if (gguf_name.rfind(kBlk, 0) != 0) return {};
  const size_t dot = gguf_name.find('.', kBlk.size());
  if (dot == std::string::npos) return {};
  const std::string layer = gguf_name.substr(kBlk.size(), dot - kBlk.size());
  const std::string_view rest = std::string_view(gguf_name).substr(dot + 1);
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 3> kSandwich = {{
      {"ffn_norm.weight", "pre_feedforward_layernorm.weight"},
      {"post_attention_norm.weight", "post_attention_layernorm.weight"},
      {"post_ffw_norm.weight", "post_feedforward_layernorm.weight"},
  }};
  if (post_norms)
    for (const auto& [g, h] : kSandwich)
      if (rest == g) return "model.layers." + layer + "." + std::string(h);
  for (const auto& [g, h] : kLayer)
    if (rest == g) return "model.layers." + layer + "." + std::string(h);
  return {};
}

}  // namespace kestrel
