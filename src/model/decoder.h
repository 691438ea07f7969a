// The shared forward pass of decoder-only transformers (Llama, Qwen2, Qwen3, Gemma 3 and relatives):
// embedding, N pre-norm blocks of GQA attention over the paged KV cache (full or sliding-window per layer)
// and a gated MLP (SwiGLU or GeGLU), with optional norms of each block's outputs, final norm, logits.
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
      : arch_(&arch), cfg_(std::move(cfg)), w_(std::move(weights)), last_layer_(cfg_.n_layers) {}

  const ModelConfig& config() const { return cfg_; }
  const Architecture& architecture() const { return *arch_; }
  const DecoderWeights& weights() const { return w_; }

  // Moves the weights to ctx.device: on CUDA float weights become bf16, GGUF quantized linear weights keep
  // their blocks and grouped integer ones (GPTQ/AWQ) their codes and groups (unless set_dequantize_on_place),
  // activations are bf16. Fuses the q/k/v and gate/up projections where their parts' formats agree, on
  // either device (decoder_weights.h).
  void place_on(const ops::Context& ctx);
  // Makes place_on convert quantized weights (GGUF blocks and grouped integers) to bf16 (A/B runs: the bf16
  // kernels on the same model).
  void set_dequantize_on_place(bool on) { dequantize_on_place_ = on; }
  // Converts the blocks' float linears to W8A8 of type t (DecoderWeights::quantize_w8a8) before place_on;
  // returns how many. Host weights only.
  int quantize_w8a8(DType t, ThreadPool& pool);
  Device device() const { return device_; }
  // Told how far place_on has got while it moves the weights to another device (the CLI draws a progress
  // bar). Set here rather than passed to place_on, which the engine calls on the CLI's behalf.
  void set_place_progress(PlaceProgress progress) { place_progress_ = std::move(progress); }

  // The activations of one step: owned by whoever runs steps (one set per execution lane, so two lanes can
  // run the same weights at once).
  struct Scratch {
    int64_t tokens = 0;  // capacity in tokens
    // x: residual stream; h: normalised input of a block / its output; qkv: projections (fused or
    // packed); q: rotated queries; attn: attention output; ffn: gate | up; act: swiglu output.
    Tensor x, h, qkv, q, attn, ffn, act;
  };
  // Runs only blocks [first, last) from now on (all of them by default): calibration advances the residual
  // stream of its text a block at a time (engine/weight_quantize.h). Layers keep their indices, so each
  // block gets its own per-layer config (rope_of, is_sliding) and KV-cache layer; the other blocks' weights
  // are never read (they may be empty). With first > 0 every row of a step must bring the residual stream at
  // block first's input as its embeddings (StepSeq::embeddings). A range that ends before the last block
  // still computes the logit rows, from its last block's output (calibration ignores them).
  void set_layers(int first, int last);
  int first_layer() const { return first_layer_; }
  int last_layer() const { return last_layer_; }

  // Activations for steps of up to n_tokens tokens (and as many logit rows) on ctx.device.
  Scratch make_scratch(const ops::Context& ctx, int64_t n_tokens) const;

  // Plans the attention of a step whose sequences are `batch` (device tables included) once for every layer
  // of each kind (ops::plan_attention), with the model's softmax scale and sliding window.
  StepAttention plan_attention(const ops::Context& ctx, const ops::AttentionBatch& batch, std::span<ops::KvLayer> kv,
                               const Scratch& s) const;
  // Runs one step from inputs on ctx.device; writes the K/V of the new tokens into `kv` and f32 logits
  // [R, vocab] of the logit rows into `logits` (on ctx.device). A context's LinearObserver sees every
  // linear's input and the residual stream after each block. Allocates, copies and synchronises nothing,
  // so a lane can record it into a graph. The engine's executor (engine/executor.h) is the only caller.
  void forward(const ops::Context& ctx, const StepInputs& in, std::span<ops::KvLayer> kv, Scratch& s,
               Tensor& logits) const;

 private:
  void attention_block(const ops::Context& ctx, int layer, ops::KvLayer& kv, const StepAttention& attention,
                       const Tensor& positions, const Tensor& slots, const Tensor& seals, Scratch& s, int64_t T) const;
  void mlp_block(const ops::Context& ctx, const LayerWeights& L, const Tensor* next_norm, Scratch& s, int64_t T) const;

  const Architecture* arch_;
  ModelConfig cfg_;
  DecoderWeights w_;
  DType act_dtype_ = DType::F32;
  Device device_ = Device::Cpu;
  PlaceProgress place_progress_;
  bool dequantize_on_place_ = false;
  int first_layer_ = 0, last_layer_;  // set_layers
};

}  // namespace kestrel
