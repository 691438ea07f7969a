// The tensors of a decoder-only transformer, gathered from a WeightSource by GGUF-style name. Linear
// weights are Linear operands (core/linear.h) in their file's format (quantized kernels read them in
// place); norms and biases are f32.
#pragma once

#include <array>
#include <vector>

#include "core/linear.h"
#include "core/tensor.h"
#include "model/architecture.h"
#include "model/model_config.h"
#include "model/weight_source.h"
#include "model/weight_uploader.h"
#include "ops/context.h"

namespace kestrel {
class ThreadPool;
}

namespace kestrel {

struct LayerWeights {
  Tensor attn_norm;
  Linear wq, wk, wv, wo;
  Tensor bq, bk, bv;      // qkv_bias architectures
  Tensor q_norm, k_norm;  // qk_norm architectures
  Tensor ffn_norm;
  Linear w_gate, w_up, w_down;
  Tensor attn_post_norm, ffn_post_norm;  // post_norms architectures: the outputs' norms before the residual adds
  // Fused projections (fuse_projections): wq | wk | wv and w_gate | w_up stacked by rows, so a step runs
  // one matmul instead of three and two. When set, the parts they replace are empty.
  Linear wqkv, w_gate_up;
  Tensor bqkv;

  // Every field of a kind, empty or not, for code that treats them alike: the linear operands, and the 1-D
  // tensors (norm weights and biases).
  template <typename Self>
  static auto linears_of(Self& s) {
    return std::array{&s.wq, &s.wk, &s.wv, &s.wo, &s.w_gate, &s.w_up, &s.w_down, &s.wqkv, &s.w_gate_up};
  }
  template <typename Self>
  static auto vectors_of(Self& s) {
    return std::array{&s.attn_norm,      &s.bq,           &s.bk, &s.bv, &s.q_norm, &s.k_norm, &s.ffn_norm, &s.bqkv,
                      &s.attn_post_norm, &s.ffn_post_norm};
  }
  auto linears() { return linears_of(*this); }
  auto linears() const { return linears_of(*this); }
  auto vectors() { return vectors_of(*this); }
  auto vectors() const { return vectors_of(*this); }
};

struct DecoderWeights {
  Tensor tok_embd;     // [vocab, hidden]
  Tensor output_norm;  // [hidden]
  Linear output;       // [vocab, hidden]; the embedding when tied
  std::vector<LayerWeights> layers;

  // Loads and shape-checks every tensor; throws kestrel::Error naming the first missing or mis-shaped one.
  // Each linear gets its id (layer and role).
  static DecoderWeights load(const WeightSource& src, const Architecture& arch, const ModelConfig& cfg);
  size_t nbytes() const;
  bool tied() const { return output.weight.data == tok_embd.data; }
  // Calls f(const Tensor&) once for every tensor present, a linear's group tensors included (a tied output
  // projection counts once).
  template <typename F>
  void for_each_tensor(F&& f) const {
    for (const Tensor* t : {&tok_embd, &output_norm}) f(*t);
    if (!tied()) output.for_each_tensor(f);
    for (const LayerWeights& L : layers) {
      for (const Linear* l : L.linears()) l->for_each_tensor(f);
      for (const Tensor* t : L.vectors())
        if (!t->empty()) f(*t);
    }
  }

  // Stacks each layer's q/k/v and gate/up weights into one linear where their formats agree: one dtype,
  // and for grouped integer weights one group size, symmetry and g_idx (GPTQ act-order orders input
  // channels per linear; stacked rows must share it). Host weights; mixed-type GGUFs such as Q4_K_M keep
  // some layers unfused. Idempotent.
  void fuse_projections();

  // Converts the blocks' float linears to W8A8 of type t (I8 or F8E4M3; core/w8a8.h: a scale per output
  // channel, activations quantized per token at run time), in place on the host, as vLLM's --quantization
  // fp8 does at load; the embedding and the output projection stay as they are, as do quantized linears.
  // Returns how many linears were converted.
  int quantize_w8a8(DType t, ThreadPool& pool);

  // A copy on ctx.device with the embedding and float linear weights converted to `dtype` (bf16 on GPUs),
  // norms/biases kept f32. Linear weights of a GGUF quantized type keep their blocks, grouped integer
  // ones their codes, scales, zero points and g_idx, and W8A8 ones their codes and channel scales (the
  // device's matmul reads them) unless `dequantize`,
  // which converts them to `dtype` as well (grouped ones logged once). Projections are fused where their
  // parts end up in one type and, grouped, one format (a Q4_K_M's q/k and v differ, as do act-order linears
  // with their own g_idx: those stay apart). Streams through the lane's staging
  // buffers (weight_uploader.h); `progress` hears how far it has got.
  DecoderWeights to_device(const ops::Context& ctx, DType dtype, bool dequantize,
                           const PlaceProgress& progress = {}) const;
};

}  // namespace kestrel
