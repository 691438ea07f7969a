// The shared forward pass of decoder-only transformers (Llama, Qwen2, Qwen3 and relatives): embedding,
// N pre-norm blocks of GQA attention over the paged KV cache and a SwiGLU MLP, final norm, logits.
// Everything goes through ops::, so the same code runs on every backend and variant.
#pragma once

#include <span>

#include "core/tensor.h"
#include "model/architecture.h"
#include "model/decoder_weights.h"
#include "model/model_config.h"
#include "model/step_inputs.h"
#include "ops/context.h"

namespace kestrel {

class Decoder {
 public:
  Decoder(const Architecture& arch, ModelConfig cfg, DecoderWeights weights)
      : arch_(&arch), cfg_(std::move(cfg)), w_(std::move(weights)) {}

  const ModelConfig& config() const { return cfg_; }
  const Architecture& architecture() const { return *arch_; }
  const DecoderWeights& weights() const { return w_; }

  // Moves the weights to ctx.device: on CUDA they become bf16 and activations bf16. Fuses the q/k/v and
  // gate/up projections on either device (decoder_weights.h).
  void place_on(const ops::Context& ctx);
  Device device() const { return device_; }

  // Plans the attention of a step whose sequences are `batch` (device tables included) once, for every
  // layer (ops::plan_attention). Needs reserve() to cover the step's tokens.
  ops::AttentionPlan plan_attention(const ops::Context& ctx, const ops::AttentionBatch& batch,
                                    std::span<ops::KvLayer> kv);
  // Runs one step from inputs on ctx.device; writes the K/V of the new tokens into `kv` and f32 logits
  // [R, vocab] of the logit rows into `logits` (on ctx.device). Allocates, copies and synchronises nothing
  // once reserve() covers the step, so a lane can record it into a graph. The engine's executor
  // (engine/executor.h) is the only caller.
  void forward(const ops::Context& ctx, const StepInputs& in, std::span<ops::KvLayer> kv, Tensor& logits);
  // Sizes the activation scratch for steps of up to n_tokens tokens (it never shrinks).
  void reserve(const ops::Context& ctx, int64_t n_tokens) { scratch(ctx, n_tokens); }
  // Changes whenever the scratch is reallocated: graphs captured over the old buffers must be re-captured.
  uint64_t scratch_generation() const { return scratch_generation_; }

 private:
  struct Scratch {
    int64_t tokens = 0;  // capacity in tokens
    // x: residual stream; h: normalised input of a block / its output; qkv: projections (fused or
    // packed); q: rotated queries; attn: attention output; ffn: gate | up; act: swiglu output.
    Tensor x, h, qkv, q, attn, ffn, act;
  };
  Scratch& scratch(const ops::Context& ctx, int64_t n_tokens);
  void attention_block(const ops::Context& ctx, const LayerWeights& L, ops::KvLayer& kv,
                       const ops::AttentionPlan& attention, const Tensor& positions, const Tensor& slots, Scratch& s,
                       int64_t T);
  void mlp_block(const ops::Context& ctx, const LayerWeights& L, const Tensor* next_norm, Scratch& s, int64_t T);

  const Architecture* arch_;
  ModelConfig cfg_;
  DecoderWeights w_;
  Scratch scratch_;
  uint64_t scratch_generation_ = 0;
  DType act_dtype_ = DType::F32;
  Device device_ = Device::Cpu;
};

}  // namespace kestrel
