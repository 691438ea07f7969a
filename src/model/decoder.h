// The shared forward pass of decoder-only transformers (Llama, Qwen2, Qwen3 and relatives): embedding,
// N pre-norm blocks of GQA attention over the paged KV cache and a SwiGLU MLP, final norm, logits.
// Everything goes through ops::, so the same code runs on every backend and variant.
#pragma once

#include <span>

#include "core/tensor.h"
#include "model/architecture.h"
#include "model/decoder_weights.h"
#include "model/model_config.h"
#include "model/step_batch.h"
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

  // Runs one step; writes the K/V of the new tokens into `kv` and returns f32 logits
  // [batch.logit_rows.size(), vocab] on the host.
  Tensor forward(const ops::Context& ctx, const StepBatch& batch, std::span<ops::KvLayer> kv);

  // The same step from inputs already on ctx.device: tokens, positions, slots i32 [T]; `attention` with
  // its device tables; logit_rows i32 [R]. Writes f32 logits [R, vocab] into `logits` (on ctx.device).
  // Allocates, copies and synchronises nothing once reserve() covers T tokens, so a CUDA stream can
  // capture it into a graph (engine/decode_graphs.h).
  void forward_device(const ops::Context& ctx, const Tensor& tokens, const Tensor& positions, const Tensor& slots,
                      const ops::AttentionBatch& attention, const Tensor& logit_rows, std::span<ops::KvLayer> kv,
                      Tensor& logits);
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
                       const ops::AttentionBatch& batch, const Tensor& positions, const Tensor& slots, Scratch& s,
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
