#include "model/decoder_weights.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstring>

#include "core/dequant.h"
#include "core/error.h"
#include "ops/ops.h"

namespace kestrel {
namespace {

Tensor expect(const WeightSource& src, const std::string& name, std::vector<int64_t> shape) {
  Tensor t = src.get(name);
  KS_CHECK(t.shape == shape, "tensor '{}' has shape [{}], expected [{}]", name, fmt::join(t.shape, ", "),
           fmt::join(shape, ", "));
  return t;
}

// Norm weights and biases are tiny; keep them in f32 so every kernel reads one format.
Tensor expect_f32(const WeightSource& src, const std::string& name, std::vector<int64_t> shape) {
  Tensor t = expect(src, name, std::move(shape));
  if (t.dtype == DType::F32) return t;
  Tensor f = Tensor::empty_host(DType::F32, t.shape);
  dequantize_row(t.dtype, t.data, f.ptr<float>(), t.numel());
  return f;
}

// The rows of `parts` stacked into one new host tensor (vectors: concatenated); empty when they differ in
// dtype or width.
Tensor stack_rows(std::initializer_list<const Tensor*> parts) {
  const Tensor& first = **parts.begin();
  const bool vectors = first.ndim() == 1;
  int64_t rows = 0;
  for (const Tensor* p : parts) {
    if (p->empty() || p->dtype != first.dtype || p->ndim() != first.ndim() || p->device != Device::Cpu ||
        (!vectors && p->cols() != first.cols()))
      return {};
    rows += vectors ? p->numel() : p->rows();
  }
  Tensor out = Tensor::empty_host(first.dtype, vectors ? std::vector<int64_t>{rows} : std::vector{rows, first.cols()});
  char* dst = static_cast<char*>(out.data);
  for (const Tensor* p : parts) {
    std::memcpy(dst, p->data, p->nbytes());
    dst += p->nbytes();
  }
  return out;
}

void fuse_layer(LayerWeights& L) {
  if (L.wqkv.empty() && !L.wq.empty()) {
    L.wqkv = stack_rows({&L.wq, &L.wk, &L.wv});
    if (!L.wqkv.empty()) {
      if (!L.bq.empty()) L.bqkv = stack_rows({&L.bq, &L.bk, &L.bv});
      L.wq = L.wk = L.wv = L.bq = L.bk = L.bv = Tensor{};
    }
  }
  if (L.w_gate_up.empty() && !L.w_gate.empty()) {
    L.w_gate_up = stack_rows({&L.w_gate, &L.w_up});
    if (!L.w_gate_up.empty()) L.w_gate = L.w_up = Tensor{};
  }
}

}  // namespace

void DecoderWeights::fuse_projections() {
  for (LayerWeights& L : layers) fuse_layer(L);
}

DecoderWeights DecoderWeights::load(const WeightSource& src, const Architecture& arch, const ModelConfig& c) {
  DecoderWeights w;
  const int64_t q_dim = int64_t{c.n_heads} * c.head_dim, kv_dim = int64_t{c.n_kv_heads} * c.head_dim;
  w.tok_embd = expect(src, "token_embd.weight", {c.vocab, c.hidden});
  w.output_norm = expect_f32(src, "output_norm.weight", {c.hidden});
  w.output =
      c.tied_embeddings || !src.has("output.weight") ? w.tok_embd : expect(src, "output.weight", {c.vocab, c.hidden});
  w.layers.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    auto n = [l](const char* suffix) { return fmt::format("blk.{}.{}", l, suffix); };
    LayerWeights& L = w.layers[l];
    L.attn_norm = expect_f32(src, n("attn_norm.weight"), {c.hidden});
    L.wq = expect(src, n("attn_q.weight"), {q_dim, c.hidden});
    L.wk = expect(src, n("attn_k.weight"), {kv_dim, c.hidden});
    L.wv = expect(src, n("attn_v.weight"), {kv_dim, c.hidden});
    L.wo = expect(src, n("attn_output.weight"), {c.hidden, q_dim});
    if (arch.qkv_bias) {
      L.bq = expect_f32(src, n("attn_q.bias"), {q_dim});
      L.bk = expect_f32(src, n("attn_k.bias"), {kv_dim});
      L.bv = expect_f32(src, n("attn_v.bias"), {kv_dim});
    }
    if (arch.qk_norm) {
      L.q_norm = expect_f32(src, n("attn_q_norm.weight"), {c.head_dim});
      L.k_norm = expect_f32(src, n("attn_k_norm.weight"), {c.head_dim});
    }
    L.ffn_norm = expect_f32(src, n("ffn_norm.weight"), {c.hidden});
    L.w_gate = expect(src, n("ffn_gate.weight"), {c.ffn, c.hidden});
    L.w_up = expect(src, n("ffn_up.weight"), {c.ffn, c.hidden});
    L.w_down = expect(src, n("ffn_down.weight"), {c.hidden, c.ffn});
  }
  return w;
}

size_t DecoderWeights::nbytes() const {
  size_t total = 0;
  for_each_tensor([&](const Tensor& t) { total += t.nbytes(); });
  return total;
}

DecoderWeights DecoderWeights::to_device(const ops::Context& ctx, DType dtype) const {
  auto to_host = [](const Tensor& t, DType to) -> Tensor {
    if (t.empty() || t.dtype == to) return t;
    Tensor host = Tensor::empty_host(to, t.shape);
    std::vector<float> row(t.cols());
    for (int64_t r = 0; r < t.rows(); ++r) {
      dequantize_row(t.dtype, t.row(r), row.data(), t.cols());
      quantize_row(to, row.data(), host.row(r), t.cols());
    }
    return host;
  };
  auto convert = [&](const Tensor& t, DType to) -> Tensor { return t.empty() ? t : ops::upload(ctx, to_host(t, to)); };
  DecoderWeights d;
  d.tok_embd = convert(tok_embd, dtype);
  d.output_norm = convert(output_norm, DType::F32);
  d.output = output.data == tok_embd.data ? d.tok_embd : convert(output, dtype);
  d.layers.reserve(layers.size());
  for (const LayerWeights& L : layers) {
    // Converted on the host first, so that parts of mixed-type files fuse once they share `dtype`.
    LayerWeights D = L;
    for (Tensor* t : D.fields()) *t = to_host(*t, t->ndim() == 1 ? DType::F32 : dtype);
    fuse_layer(D);
    for (Tensor* t : D.fields())
      if (!t->empty()) *t = ops::upload(ctx, *t);
    d.layers.push_back(std::move(D));
  }
  return d;
}

}  // namespace kestrel
