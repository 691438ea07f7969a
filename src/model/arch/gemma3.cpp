// Gemma 3 (text): GQA with an RMSNorm over each q and k head, GeGLU MLP, "sandwich" norms (each block's
// attention and MLP outputs are normalised before the residual add), embeddings scaled by sqrt(hidden),
// and five sliding-window layers (local RoPE base 10000) for every global one. llama.cpp's GGUFs keep the
// Hugging Face half-split RoPE layout and store norm weights as 1 + w; they name neither the layer pattern
// nor the local base, which llama.cpp fixes for the architecture as below.
#include "model/arch/gemma3.h"

namespace kestrel::arch {

const Architecture kGemma3{
    .name = "gemma3",
    .gguf_names = {"gemma3"},
    .hf_model_types = {"gemma3_text"},
    .gguf_rope_style = ops::RopeParams::Style::HalfSplit,
    .qkv_bias = false,
    .qk_norm = true,
    .gguf_output_optional = true,
    .post_norms = true,
    .gelu = true,
    .embed_scale = true,
    .hf_norm_plus_one = true,
    .hf_tied_default = true,
    .gguf_swa_period = 6,
    .swa_rope_theta = 10000.f,
};

}  // namespace kestrel::arch
