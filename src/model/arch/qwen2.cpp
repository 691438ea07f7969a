// Qwen2 / Qwen2.5: the Llama block with biases on the q/k/v projections; GGUFs keep half-split RoPE.
#include "model/arch/qwen2.h"

namespace kestrel::arch {

const Architecture kQwen2{
    .name = "qwen2",
    .gguf_names = {"qwen2"},
    .hf_model_types = {"qwen2"},
    .gguf_rope_style = ops::RopeParams::Style::HalfSplit,
    .qkv_bias = true,
    .qk_norm = false,
    .gguf_output_optional = true,
};

}  // namespace kestrel::arch
