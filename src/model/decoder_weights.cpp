#include "model/decoder_weights.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <cstring>

#include "core/dequant.h"
#include "core/error.h"
#include "core/finite_check.h"
#include "core/log.h"
#include "core/quant_groups.h"
#include "core/thread_pool.h"
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

// On every core: the source is usually a fresh mapping of the model file, whose page faults limit one
// thread to a fraction of the memory bandwidth.
void parallel_copy(void* dst, const void* src, size_t bytes) {
  ThreadPool::global().parallel_for(
      static_cast<int64_t>(bytes),
      [&](int64_t begin, int64_t end) {
        std::memcpy(static_cast<char*>(dst) + begin, static_cast<const char*>(src) + begin, end - begin);
      },
      int64_t{1} << 20);
}

// Whether the parts lie back to back in one allocation (gate and up do in most model files).
bool adjacent(std::initializer_list<const Tensor*> parts) {
  const Tensor& first = **parts.begin();
  if (!first.storage) return false;
  const char* next = static_cast<const char*>(first.data);
  for (const Tensor* p : parts) {
    const bool same_owner = !p->storage.owner_before(first.storage) && !first.storage.owner_before(p->storage);
    if (!same_owner || p->data != next) return false;
    next += p->nbytes();
  }
  return true;
}

// The rows of `parts` stacked into one host tensor (vectors: concatenated): a view when they are adjacent
// already, else a copy; empty when they differ in dtype or width.
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
  std::vector<int64_t> shape = vectors ? std::vector<int64_t>{rows} : std::vector{rows, first.cols()};
  if (adjacent(parts)) {
    Tensor view = first;
    view.shape = std::move(shape);
    return view;
  }
  Tensor out = Tensor::empty_host(first.dtype, std::move(shape));
  char* dst = static_cast<char*>(out.data);
  for (const Tensor* p : parts) {
    parallel_copy(dst, p->data, p->nbytes());
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
  // Every tensor read, by name, for the finite check below.
  std::vector<std::string> names;
  std::vector<const Tensor*> read;
  auto matrix = [&](Tensor& dst, const std::string& name, std::vector<int64_t> shape) {
    dst = expect(src, name, std::move(shape));
    names.push_back(name);
    read.push_back(&dst);
  };
  auto f32_vector = [&](Tensor& dst, const std::string& name, std::vector<int64_t> shape) {
    dst = expect_f32(src, name, std::move(shape));
    names.push_back(name);
    read.push_back(&dst);
  };
  const int64_t q_dim = int64_t{c.n_heads} * c.head_dim, kv_dim = int64_t{c.n_kv_heads} * c.head_dim;
  matrix(w.tok_embd, "token_embd.weight", {c.vocab, c.hidden});
  f32_vector(w.output_norm, "output_norm.weight", {c.hidden});
  if (c.tied_embeddings)
    w.output = w.tok_embd;
  else
    matrix(w.output, "output.weight", {c.vocab, c.hidden});
  w.layers.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    auto n = [l](const char* suffix) { return fmt::format("blk.{}.{}", l, suffix); };
    LayerWeights& L = w.layers[l];
    f32_vector(L.attn_norm, n("attn_norm.weight"), {c.hidden});
    matrix(L.wq, n("attn_q.weight"), {q_dim, c.hidden});
    matrix(L.wk, n("attn_k.weight"), {kv_dim, c.hidden});
    matrix(L.wv, n("attn_v.weight"), {kv_dim, c.hidden});
    matrix(L.wo, n("attn_output.weight"), {c.hidden, q_dim});
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
    matrix(L.w_gate, n("ffn_gate.weight"), {c.ffn, c.hidden});
    matrix(L.w_up, n("ffn_up.weight"), {c.ffn, c.hidden});
    matrix(L.w_down, n("ffn_down.weight"), {c.hidden, c.ffn});
  }
  // A NaN or infinite weight would load and then turn every logit into NaN (empty or arbitrary text).
  const auto t0 = std::chrono::steady_clock::now();
  if (const auto bad = find_non_finite(read, ThreadPool::global())) {
    const Tensor& t = *read[bad->tensor];
    KS_FAIL("tensor '{}' ({}) has a NaN or infinite {} at element {}: the model file is corrupt",
            src.file_name(names[bad->tensor]), t.describe(), dtype_info(t.dtype).quantized ? "block scale" : "value",
            bad->element);
  }
  log::debug("checked {} tensors for NaN/Inf in {:.1f} ms", read.size(),
             std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  return w;
}

size_t DecoderWeights::nbytes() const {
  size_t total = 0;
  for_each_tensor([&](const Tensor& t) { total += t.nbytes(); });
  return total;
}

DecoderWeights DecoderWeights::to_device(const ops::Context& ctx, DType dtype, bool dequantize,
                                         const PlaceProgress& progress) const {
  // Written field by field below: a new LayerWeights field needs a line here too.
  static_assert(std::tuple_size_v<decltype(LayerWeights{}.fields())> == 19);
  const auto t0 = std::chrono::steady_clock::now();
  WeightUploader up(ctx);
  // Norms and biases (1-D) stay f32; a linear weight keeps a GGUF block type unless told to dequantize;
  // everything else becomes `dtype`.
  auto placed_type = [&](const Tensor& t) {
    if (t.ndim() == 1) return DType::F32;
    return !dequantize && quant::is_weight_type(t.dtype) ? t.dtype : dtype;
  };
  auto place = [&](std::initializer_list<const Tensor*> parts) -> Tensor {
    const Tensor& first = **parts.begin();
    if (first.empty()) return {};
    return up.add(placed_type(first), parts);
  };
  // Whether parts stored apart can be stacked: they are placed in one type.
  auto one_type = [&](std::initializer_list<const Tensor*> parts) {
    const DType t = placed_type(**parts.begin());
    return std::all_of(parts.begin(), parts.end(), [&](const Tensor* p) { return placed_type(*p) == t; });
  };
  // A fused tensor placed as it is; parts stacked into the fused slot, or (stack false) placed one by one
  // into their own slots.
  auto fuse = [&](const Tensor& whole, std::initializer_list<const Tensor*> parts, bool stack, Tensor& fused,
                  std::initializer_list<Tensor*> apart) {
    if (!whole.empty()) return void(fused = place({&whole}));
    if ((*parts.begin())->empty()) return;
    if (stack) return void(fused = place(parts));
    auto out = apart.begin();
    for (const Tensor* p : parts) **out++ = place({p});
  };
  DecoderWeights d;
  d.tok_embd = up.add(dtype, {&tok_embd});  // the embedding gathers rows: always `dtype`
  d.output_norm = place({&output_norm});
  d.output = output.data == tok_embd.data ? d.tok_embd : place({&output});
  d.layers.reserve(layers.size());
  for (const LayerWeights& L : layers) {
    LayerWeights& D = d.layers.emplace_back();
    D.attn_norm = place({&L.attn_norm});
    // The biases follow their weights: the decoder adds bqkv to a fused projection, bq/bk/bv to parts.
    const bool qkv = !L.wqkv.empty() || one_type({&L.wq, &L.wk, &L.wv});
    fuse(L.wqkv, {&L.wq, &L.wk, &L.wv}, qkv, D.wqkv, {&D.wq, &D.wk, &D.wv});
    fuse(L.bqkv, {&L.bq, &L.bk, &L.bv}, qkv, D.bqkv, {&D.bq, &D.bk, &D.bv});
    D.wo = place({&L.wo});
    D.q_norm = place({&L.q_norm});
    D.k_norm = place({&L.k_norm});
    D.ffn_norm = place({&L.ffn_norm});
    D.attn_post_norm = place({&L.attn_post_norm});
    D.ffn_post_norm = place({&L.ffn_post_norm});
    fuse(L.w_gate_up, {&L.w_gate, &L.w_up}, !L.w_gate_up.empty() || one_type({&L.w_gate, &L.w_up}), D.w_gate_up,
         {&D.w_gate, &D.w_up});
    D.w_down = place({&L.w_down});
  }
  up.run(progress);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double gb = static_cast<double>(d.nbytes()) / 1e9;
  log::info("placed {:.2f} GB on {} in {:.2f} s ({:.2f} GB/s)", gb, ctx.device == Device::Cuda ? "CUDA" : "the CPU", s,
            gb / s);
  return d;
}

}  // namespace kestrel
