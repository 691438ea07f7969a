// Qwen3: no q/k/v biases, but an RMSNorm over each query and key head before RoPE; head_dim is set
// explicitly and need not equal hidden / n_heads.
#include "model/arch/qwen3.h"

namespace kestrel::arch {

const Architecture kQwen3{
    .name = "qwen3",
    .gguf_names = {"qwen3"},
    .hf_model_types = {"qwen3"},
    .gguf_rope_style = ops::RopeParams::Style::HalfSplit,
    .qkv_bias = false,
    .qk_norm = true,
    .gguf_output_optional = true,
};

}  // namespace kestrel::arch
