// Llama 2/3/3.1/3.2/3.3, SmolLM2, Mistral: pre-norm decoder, GQA, SwiGLU, no biases. Llama 3.1 RoPE
// scaling comes from the config (rope_scaling / rope.scaling.* metadata), not from the architecture.
#include "model/arch/llama.h"

namespace kestrel::arch {

const Architecture kLlama{
    .name = "llama",
    .gguf_names = {"llama", "mistral"},
    .hf_model_types = {"llama", "mistral"},
    .gguf_rope_style = ops::RopeParams::Style::Adjacent,
    .qkv_bias = false,
    .qk_norm = false,
    .gguf_output_optional = true,
};

}  // namespace kestrel::arch
