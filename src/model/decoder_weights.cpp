#include "model/decoder_weights.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <set>

#include "core/dequant.h"
#include "core/error.h"
#include "core/finite_check.h"
#include "core/log.h"
#include "core/quant_groups.h"
#include "core/thread_pool.h"
#include "core/w8a8.h"
#include "model/stack_rows.h"
#include "model/weight_uploader.h"

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

// Whether grouped linears read their inputs alike: one group size and symmetry, and one g_idx (act-order
// orders each linear's input channels by its own statistics; rows stacked under one g_idx must share it).
bool same_groups(const std::vector<const Linear*>& parts) {
  const IntGroups& a = parts.front()->groups;
  for (const Linear* p : parts) {
    const IntGroups& b = p->groups;
    if (b.group_size != a.group_size || b.scales.cols() != a.scales.cols() || b.zeros.empty() != a.zeros.empty() ||
        b.g_idx.empty() != a.g_idx.empty())
      return false;
    if (!b.g_idx.empty() && b.g_idx.data != a.g_idx.data &&
        (b.g_idx.device != Device::Cpu || std::memcmp(b.g_idx.data, a.g_idx.data, a.g_idx.nbytes()) != 0))
      return false;
  }
  return true;
}

// The rows of host linears stacked into one (see stack_rows), or an empty linear where their formats differ.
Linear stack_linears(std::initializer_list<const Linear*> list, LinearId id) {
  const std::vector<const Linear*> parts(list);
  const Linear& first = *parts.front();
  for (const Linear* p : parts)
    if (p->empty() || p->grouped() != first.grouped() || p->scaled() != first.scaled() || p->layout != first.layout)
      return {};
  auto stacked = [&](auto field) {
    std::vector<const Tensor*> ts;
    for (const Linear* p : parts) ts.push_back(field(*p));
    return stack_rows(ts);
  };
  if (first.grouped() && !same_groups(parts)) return {};
  Tensor weight = stacked([](const Linear& l) { return &l.weight; });
  if (weight.empty()) return {};
  if (first.dense()) {
    Linear l(std::move(weight));
    l.id = id;
    return l;
  }
  if (first.scaled())
    return Linear::scaled(std::move(weight), stacked([](const Linear& l) { return &l.channel_scales; }), id);
  IntGroups g = first.groups;
  g.scales = stacked([](const Linear& l) { return &l.groups.scales; });
  if (!g.zeros.empty()) g.zeros = stacked([](const Linear& l) { return &l.groups.zeros; });
  return Linear::grouped(std::move(weight), std::move(g), id);
}

void fuse_layer(LayerWeights& L, int layer) {
  if (L.wqkv.empty() && !L.wq.empty()) {
    L.wqkv = stack_linears({&L.wq, &L.wk, &L.wv}, {layer, LinearRole::QKV});
    if (!L.wqkv.empty()) {
      if (!L.bq.empty()) L.bqkv = stack_rows({&L.bq, &L.bk, &L.bv});
      L.wq = L.wk = L.wv = Linear{};
      L.bq = L.bk = L.bv = Tensor{};
    }
  }
  if (L.w_gate_up.empty() && !L.w_gate.empty()) {
    L.w_gate_up = stack_linears({&L.w_gate, &L.w_up}, {layer, LinearRole::GateUp});
    if (!L.w_gate_up.empty()) L.w_gate = L.w_up = Linear{};
  }
}

}  // namespace

void DecoderWeights::fuse_projections() {
  for (size_t l = 0; l < layers.size(); ++l) fuse_layer(layers[l], static_cast<int>(l));
}

DecoderWeights DecoderWeights::load(const WeightSource& src, const Architecture& arch, const ModelConfig& c) {
  DecoderWeights w;
  // Every tensor to scan for NaN/Inf, with its name in the file: a linear's matrix, or for grouped integer
  // weights their scales (the codes and zero points are integers).
  std::vector<std::string> names;
  std::vector<const Tensor*> read;
  auto scan = [&](const Tensor& t, std::string file_name) {
    names.push_back(std::move(file_name));
    read.push_back(&t);
  };
  auto linear = [&](Linear& dst, const std::string& name, std::vector<int64_t> shape, LinearId id) {
    dst = src.linear(name);
    KS_CHECK(dst.weight.shape == shape, "tensor '{}' ({}) has shape [{}], expected [{}]", name, dst.describe(),
             fmt::join(dst.weight.shape, ", "), fmt::join(shape, ", "));
    dst.id = id;
    std::string file = src.file_name(name);
    if (dst.grouped() && file.ends_with(".weight")) file.replace(file.size() - 6, 6, "scales");
    scan(dst.grouped() ? dst.groups.scales : dst.scaled() ? dst.channel_scales : dst.weight, std::move(file));
  };
  auto f32_vector = [&](Tensor& dst, const std::string& name, std::vector<int64_t> shape) {
    dst = expect_f32(src, name, std::move(shape));
    scan(dst, src.file_name(name));
  };
  const int64_t q_dim = int64_t{c.n_heads} * c.head_dim, kv_dim = int64_t{c.n_kv_heads} * c.head_dim;
  w.tok_embd = expect(src, "token_embd.weight", {c.vocab, c.hidden});
  scan(w.tok_embd, src.file_name("token_embd.weight"));
  f32_vector(w.output_norm, "output_norm.weight", {c.hidden});
  if (c.tied_embeddings) {
    w.output = Linear(w.tok_embd);
    w.output.id = {-1, LinearRole::Output};
  } else {
    linear(w.output, "output.weight", {c.vocab, c.hidden}, {-1, LinearRole::Output});
  }
  w.layers.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    auto n = [l](const char* suffix) { return fmt::format("blk.{}.{}", l, suffix); };
    LayerWeights& L = w.layers[l];
    f32_vector(L.attn_norm, n("attn_norm.weight"), {c.hidden});
    linear(L.wq, n("attn_q.weight"), {q_dim, c.hidden}, {l, LinearRole::Q});
    linear(L.wk, n("attn_k.weight"), {kv_dim, c.hidden}, {l, LinearRole::K});
    linear(L.wv, n("attn_v.weight"), {kv_dim, c.hidden}, {l, LinearRole::V});
    linear(L.wo, n("attn_output.weight"), {c.hidden, q_dim}, {l, LinearRole::O});
    if (arch.qkv_bias) {
      f32_vector(L.bq, n("attn_q.bias"), {q_dim});
      f32_vector(L.bk, n("attn_k.bias"), {kv_dim});
      f32_vector(L.bv, n("attn_v.bias"), {kv_dim});
    }
    if (arch.qk_norm) {
      f32_vector(L.q_norm, n("attn_q_norm.weight"), {c.head_dim});
      f32_vector(L.k_norm, n("attn_k_norm.weight"), {c.head_dim});
    }
    f32_vector(L.ffn_norm, n("ffn_norm.weight"), {c.hidden});
    if (c.post_norms) {
      f32_vector(L.attn_post_norm, n("post_attention_norm.weight"), {c.hidden});
      f32_vector(L.ffn_post_norm, n("post_ffw_norm.weight"), {c.hidden});
    }
    linear(L.w_gate, n("ffn_gate.weight"), {c.ffn, c.hidden}, {l, LinearRole::Gate});
    linear(L.w_up, n("ffn_up.weight"), {c.ffn, c.hidden}, {l, LinearRole::Up});
    linear(L.w_down, n("ffn_down.weight"), {c.hidden, c.ffn}, {l, LinearRole::Down});
  }
  // A NaN or infinite weight would load and then turn every logit into NaN (empty or arbitrary text).
  const auto t0 = std::chrono::steady_clock::now();
  if (const auto bad = find_non_finite(read, ThreadPool::global())) {
    const Tensor& t = *read[bad->tensor];
    KS_FAIL("tensor '{}' ({}) has a NaN or infinite {} at element {}: the model file is corrupt", names[bad->tensor],
            t.describe(), dtype_info(t.dtype).quantized ? "block scale" : "value", bad->element);
  }
  log::debug("checked {} tensors for NaN/Inf in {:.1f} ms", read.size(),
             std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  return w;
}

int DecoderWeights::quantize_w8a8(DType t, ThreadPool& pool) {
  KS_CHECK(is_w8_type(t), "W8A8 weights are i8 or f8_e4m3, not {}", dtype_name(t));
  std::vector<Linear*> todo;
  for (LayerWeights& L : layers)
    for (Linear* l : L.linears())
      if (!l->empty() && l->dense() && l->weight.device == Device::Cpu &&
          (l->weight.dtype == DType::F32 || l->weight.dtype == DType::F16 || l->weight.dtype == DType::BF16))
        todo.push_back(l);
  pool.parallel_for(static_cast<int64_t>(todo.size()), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      Linear& l = *todo[i];
      W8Matrix m = quantize_w8_rows(l.weight, t);
      l = Linear::scaled(std::move(m.codes), std::move(m.scales), l.id);
    }
  });
  return static_cast<int>(todo.size());
}

size_t DecoderWeights::nbytes() const {
  size_t total = 0;
  for_each_tensor([&](const Tensor& t) { total += t.nbytes(); });
  return total;
}

DecoderWeights DecoderWeights::to_device(const ops::Context& ctx, DType dtype, bool dequantize,
                                         const PlaceProgress& progress) const {
  // Written field by field below: a new LayerWeights field needs a line here too.
  static_assert(std::tuple_size_v<decltype(LayerWeights{}.linears())> == 9);
  static_assert(std::tuple_size_v<decltype(LayerWeights{}.vectors())> == 10);
  const auto t0 = std::chrono::steady_clock::now();
  WeightUploader up(ctx);
  // A grouped integer or W8A8 linear keeps its format (the device's matmul reads it), as does a GGUF block
  // type, unless told to dequantize; then they and the float linears become `dtype`.
  auto keeps_groups = [&](const Linear& l) { return !dequantize && !l.dense(); };
  auto placed_type = [&](const Linear& l) {
    if (keeps_groups(l)) return l.weight.dtype;
    return !dequantize && l.dense() && quant::is_weight_type(l.weight.dtype) ? l.weight.dtype : dtype;
  };
  std::set<std::string> decoded;  // the grouped formats placed as `dtype`, for one line in the log
  int n_decoded = 0;
  auto place = [&](std::initializer_list<const Linear*> parts, LinearId id) -> Linear {
    const Linear& first = **parts.begin();
    if (first.empty()) return {};
    if (keeps_groups(first)) return first.scaled() ? up.add_scaled(parts, id) : up.add_grouped(parts, id);
    for (const Linear* p : parts)
      if (!p->dense()) {
        decoded.insert(p->scaled() ? fmt::format("{} w8a8", dtype_name(p->weight.dtype))
                                   : fmt::format("{} g{}", dtype_name(p->weight.dtype), p->groups.group_size));
        ++n_decoded;
      }
    Linear l(up.add(placed_type(first), parts));
    l.id = id;
    return l;
  };
  // Norms and biases (1-D) stay f32.
  auto place_vector = [&](std::initializer_list<const Tensor*> parts) -> Tensor {
    return (*parts.begin())->empty() ? Tensor{} : up.add(DType::F32, parts);
  };
  // Whether parts stored apart can be stacked: they are placed in one type and, kept grouped, read their
  // inputs alike (same_groups).
  auto one_type = [&](std::initializer_list<const Linear*> parts) {
    const Linear& first = **parts.begin();
    const DType t = placed_type(first);
    const bool grouped = keeps_groups(first);
    for (const Linear* p : parts)
      if (placed_type(*p) != t || keeps_groups(*p) != grouped || p->scaled() != first.scaled()) return false;
    return !grouped || first.scaled() || same_groups(std::vector<const Linear*>(parts));
  };
  DecoderWeights d;
  d.tok_embd = up.add(dtype, {&tok_embd});  // the embedding gathers rows: always `dtype`
  d.output_norm = place_vector({&output_norm});
  if (tied()) {
    d.output = Linear(d.tok_embd);
    d.output.id = output.id;
  } else {
    d.output = place({&output}, output.id);
  }
  d.layers.reserve(layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerWeights& L = layers[i];
    LayerWeights& D = d.layers.emplace_back();
    const int l = static_cast<int>(i);
    D.attn_norm = place_vector({&L.attn_norm});
    // A fused linear is placed as it is; parts are stacked into the fused slot where they end up in one type,
    // else placed one by one into their own slots. The biases follow their weights: the decoder adds bqkv
    // to a fused projection, bq/bk/bv to parts.
    if (!L.wqkv.empty()) {
      D.wqkv = place({&L.wqkv}, L.wqkv.id);
      D.bqkv = place_vector({&L.bqkv});
    } else if (!L.wq.empty() && one_type({&L.wq, &L.wk, &L.wv})) {
      D.wqkv = place({&L.wq, &L.wk, &L.wv}, {l, LinearRole::QKV});
      D.bqkv = place_vector({&L.bq, &L.bk, &L.bv});
    } else {
      D.wq = place({&L.wq}, L.wq.id), D.wk = place({&L.wk}, L.wk.id), D.wv = place({&L.wv}, L.wv.id);
      D.bq = place_vector({&L.bq}), D.bk = place_vector({&L.bk}), D.bv = place_vector({&L.bv});
    }
    D.wo = place({&L.wo}, L.wo.id);
    D.q_norm = place_vector({&L.q_norm});
    D.k_norm = place_vector({&L.k_norm});
    D.ffn_norm = place_vector({&L.ffn_norm});
    D.attn_post_norm = place_vector({&L.attn_post_norm});
    D.ffn_post_norm = place_vector({&L.ffn_post_norm});
    if (!L.w_gate_up.empty())
      D.w_gate_up = place({&L.w_gate_up}, L.w_gate_up.id);
    else if (!L.w_gate.empty() && one_type({&L.w_gate, &L.w_up}))
      D.w_gate_up = place({&L.w_gate, &L.w_up}, {l, LinearRole::GateUp});
    else
      D.w_gate = place({&L.w_gate}, L.w_gate.id), D.w_up = place({&L.w_up}, L.w_up.id);
    D.w_down = place({&L.w_down}, L.w_down.id);
  }
  up.run(progress);
  if (n_decoded > 0)
    log::info("{} linear weights in grouped integer formats ({}) decoded to {} at placement (--dequantize)", n_decoded,
              fmt::join(decoded, ", "), dtype_name(dtype));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double gb = static_cast<double>(d.nbytes()) / 1e9;
  log::info("placed {:.2f} GB on {} in {:.2f} s ({:.2f} GB/s)", gb, ctx.device == Device::Cuda ? "CUDA" : "the CPU", s,
            gb / s);
  return d;
}

}  // namespace kestrel
