#include "model/decoder.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "ops/ops.h"

namespace kestrel {
namespace {

// `shape` viewed at element `offset` of a scratch buffer (activations: f32 or bf16, no blocks).
Tensor at(const Tensor& buf, int64_t offset, std::vector<int64_t> shape) {
  Tensor t = buf;
  t.data = static_cast<char*>(buf.data) + row_bytes(buf.dtype, offset);
  t.shape = std::move(shape);
  return t;
}

// First `rows` rows of a scratch buffer, viewed with the given inner shape.
Tensor view(const Tensor& buf, int64_t rows, std::vector<int64_t> inner) {
  inner.insert(inner.begin(), rows);
  return at(buf, 0, std::move(inner));
}

}  // namespace

Decoder::Scratch Decoder::make_scratch(const ops::Context& ctx, int64_t n) const {
  KS_CHECK(ctx.device == device_, "the model's weights are not on the requested device; call place_on first");
  const int64_t cap = std::max<int64_t>(n, 16);
  const int64_t q_dim = int64_t{cfg_.n_heads} * cfg_.head_dim, kv_dim = int64_t{cfg_.n_kv_heads} * cfg_.head_dim;
  auto alloc = [&](int64_t cols) { return ops::allocate(ctx, act_dtype_, {cap, cols}); };
  return Scratch{cap,          alloc(cfg_.hidden), alloc(cfg_.hidden),  alloc(q_dim + 2 * kv_dim),
                 alloc(q_dim), alloc(q_dim),       alloc(2 * cfg_.ffn), alloc(cfg_.ffn)};
}

// In: h = attn_norm(x). Out: x += attention, h = ffn_norm(x).
void Decoder::attention_block(const ops::Context& ctx, int layer, ops::KvLayer& kv, const StepAttention& attention,
                              const Tensor& positions, const Tensor& slots, const Tensor& seals, Scratch& s,
                              int64_t T) const {
  const LayerWeights& L = w_.layers[layer];
  const ops::RopeParams& rope = cfg_.rope_of(layer);
  const int64_t H = cfg_.n_heads, Hkv = cfg_.n_kv_heads, D = cfg_.head_dim;
  Tensor x = view(s.x, T, {cfg_.hidden}), h = view(s.h, T, {cfg_.hidden});
  Tensor q3 = view(s.q, T, {H, D});
  if (!L.wqkv.empty()) {
    Tensor qkv = view(s.qkv, T, {(H + 2 * Hkv) * D});
    ops::matmul(ctx, h, L.wqkv, qkv, L.bqkv.empty() ? nullptr : &L.bqkv);
    const ops::QkNorm norm{L.q_norm.empty() ? nullptr : &L.q_norm, L.k_norm.empty() ? nullptr : &L.k_norm,
                           cfg_.rms_eps};
    ops::rope_kv_write(ctx, qkv, positions, slots, rope, norm, q3, kv);
  } else {  // q/k/v of different weight types: one projection at a time, q/k/v packed in the same buffer
    Tensor q = at(s.qkv, 0, {T, H * D}), k = at(s.qkv, T * H * D, {T, Hkv * D}),
           v = at(s.qkv, T * (H + Hkv) * D, {T, Hkv * D});
    ops::matmul(ctx, h, L.wq, q, L.bq.empty() ? nullptr : &L.bq);
    ops::matmul(ctx, h, L.wk, k, L.bk.empty() ? nullptr : &L.bk);
    ops::matmul(ctx, h, L.wv, v, L.bv.empty() ? nullptr : &L.bv);
    if (!L.q_norm.empty()) {
      Tensor qh = q.reshaped({T * H, D}), kh = k.reshaped({T * Hkv, D});
      ops::rmsnorm(ctx, qh, L.q_norm, cfg_.rms_eps, qh);
      ops::rmsnorm(ctx, kh, L.k_norm, cfg_.rms_eps, kh);
    }
    q3 = q.reshaped({T, H, D});
    Tensor k3 = k.reshaped({T, Hkv, D});
    ops::rope(ctx, q3, positions, rope);
    ops::rope(ctx, k3, positions, rope);
    ops::kv_write(ctx, k3, v.reshaped({T, Hkv, D}), slots, kv);
  }
  ops::kv_seal(ctx, seals, kv);  // windowed KV formats: blocks this step moves out of the window
  Tensor a = view(s.attn, T, {H, D});
  ops::attention(ctx, q3, kv, cfg_.is_sliding(layer) ? attention.sliding : attention.full, a);
  ops::matmul(ctx, a.reshaped({T, H * D}), L.wo, h);
  if (!L.attn_post_norm.empty()) ops::rmsnorm(ctx, h, L.attn_post_norm, cfg_.rms_eps, h);
  ops::add_rmsnorm(ctx, x, h, L.ffn_norm, cfg_.rms_eps, h);
}

// In: h = ffn_norm(x). Out: x += mlp, h = next_norm(x) when there is a next layer (else h is scratch).
void Decoder::mlp_block(const ops::Context& ctx, const LayerWeights& L, const Tensor* next_norm, Scratch& s,
                        int64_t T) const {
  const int64_t F = cfg_.ffn;
  Tensor x = view(s.x, T, {cfg_.hidden}), h = view(s.h, T, {cfg_.hidden}), act = view(s.act, T, {F});
  if (!L.w_gate_up.empty()) {
    Tensor gu = view(s.ffn, T, {2 * F});
    ops::matmul(ctx, h, L.w_gate_up, gu);
    cfg_.gelu ? ops::geglu(ctx, gu, act) : ops::swiglu(ctx, gu, act);
  } else {
    Tensor g = at(s.ffn, 0, {T, F}), u = at(s.ffn, T * F, {T, F});
    ops::matmul(ctx, h, L.w_gate, g);
    ops::matmul(ctx, h, L.w_up, u);
    cfg_.gelu ? ops::gelu_mul(ctx, g, u, act) : ops::silu_mul(ctx, g, u, act);
  }
  ops::matmul(ctx, act, L.w_down, h);
  if (!L.ffn_post_norm.empty()) ops::rmsnorm(ctx, h, L.ffn_post_norm, cfg_.rms_eps, h);
  if (next_norm)
    ops::add_rmsnorm(ctx, x, h, *next_norm, cfg_.rms_eps, h);
  else
    ops::add(ctx, x, h, x);
}

void Decoder::set_layers(int first, int last) {
  KS_CHECK(0 <= first && first < last && last <= cfg_.n_layers, "set_layers({}, {}): the model has blocks [0, {})",
           first, last, cfg_.n_layers);
  first_layer_ = first;
  last_layer_ = last;
}

int Decoder::quantize_w8a8(DType t, ThreadPool& pool) {
  KS_CHECK(device_ == Device::Cpu, "W8A8 conversion runs on host weights, before they move to a device");
  return w_.quantize_w8a8(t, pool);
}

void Decoder::place_on(const ops::Context& ctx) {
  if (ctx.device == device_) {
    if (device_ == Device::Cpu) w_.fuse_projections();  // to_device fuses on the way to a GPU
    return;
  }
  KS_CHECK(device_ == Device::Cpu && ctx.device == Device::Cuda, "weights can only move from the CPU to CUDA");
  w_ = w_.to_device(ctx, DType::BF16, dequantize_on_place_, place_progress_);
  act_dtype_ = DType::BF16;
  device_ = ctx.device;
}

StepAttention Decoder::plan_attention(const ops::Context& ctx, const ops::AttentionBatch& batch,
                                      std::span<ops::KvLayer> kv, const Scratch& s) const {
  int64_t T = 0;
  for (const ops::AttentionSeq& q : batch.seqs) T = std::max<int64_t>(T, int64_t{q.q_begin} + q.q_len);
  KS_CHECK(!kv.empty() && s.tokens >= T && s.x.device == ctx.device,
           "plan_attention: the scratch holds {} tokens, the step needs {}", s.tokens, T);
  const Tensor q = view(s.q, T, {cfg_.n_heads, cfg_.head_dim});
  ops::AttentionBatch b = batch;
  b.scale = cfg_.attention_scale();
  b.window = 0;
  StepAttention plan;
  plan.full = ops::plan_attention(ctx, q, kv[0], b);
  if (cfg_.has_sliding_layers()) {
    b.window = cfg_.sliding_window;
    plan.sliding = ops::plan_attention(ctx, q, kv[0], b);
  }
  return plan;
}

void Decoder::forward(const ops::Context& ctx, const StepInputs& in, std::span<ops::KvLayer> kv, Scratch& s,
                      Tensor& logits) const {
  const Tensor &tokens = in.tokens, &positions = in.positions, &slots = in.slots, &logit_rows = in.logit_rows;
  const int64_t T = tokens.numel(), R = logit_rows.numel();
  KS_CHECK(T > 0, "forward step with no tokens");
  KS_CHECK(ctx.device == device_, "the model's weights are not on the requested device; call place_on first");
  KS_CHECK(kv.size() == static_cast<size_t>(cfg_.n_layers), "KV cache has {} layers, model has {}", kv.size(),
           cfg_.n_layers);
  KS_CHECK(in.attention != nullptr, "forward: the step's attention is not planned");
  KS_CHECK(s.tokens >= std::max(T, R) && s.x.device == ctx.device,
           "forward: the scratch holds {} tokens, the step needs {}", s.tokens, std::max(T, R));
  const int64_t E = in.embedding_rows.empty() ? 0 : in.embedding_rows.numel();
  KS_CHECK(positions.numel() == T && slots.numel() == T && logits.numel() == R * cfg_.vocab && E <= T &&
               (E == 0 ? in.embeddings.empty() : in.embeddings.numel() == E * cfg_.hidden),
           "forward: inputs disagree in size");
  KS_CHECK(first_layer_ == 0 || E == T,
           "forward: the model runs blocks [{}, {}), so each row needs the residual stream at block {}'s input as "
           "embeddings; {} of the step's {} rows have them",
           first_layer_, last_layer_, first_layer_, E, T);
  Tensor x = view(s.x, T, {cfg_.hidden});
  if (E < T) ops::embed(ctx, w_.tok_embd, tokens, x, cfg_.embed_scale);
  if (E > 0) ops::scatter_rows(ctx, in.embeddings, in.embedding_rows, x);
  // Each block leaves h normalised for the next one (the residual add and the norm are one op).
  Tensor h = view(s.h, T, {cfg_.hidden});
  ops::rmsnorm(ctx, x, w_.layers[first_layer_].attn_norm, cfg_.rms_eps, h);
  for (int l = first_layer_; l < last_layer_; ++l) {
    attention_block(ctx, l, kv[l], *in.attention, positions, slots, in.seals, s, T);
    mlp_block(ctx, w_.layers[l], l + 1 < last_layer_ ? &w_.layers[l + 1].attn_norm : nullptr, s, T);
    if (ctx.observer) ctx.observer->residual(l, x);
  }
  if (R == 0) return;
  // Only the rows that need logits go through the final norm and the (large) output projection.
  Tensor sel = view(s.h, R, {cfg_.hidden});
  ops::embed(ctx, x, logit_rows, sel);  // embed is a row gather
  ops::rmsnorm(ctx, sel, w_.output_norm, cfg_.rms_eps, sel);
  ops::matmul(ctx, sel, w_.output, logits);
}

}  // namespace kestrel
