// How DecoderWeights::to_device placed weights before it streamed them through staging buffers: every
// tensor (grouped integer linears: decoded) converted on the host one row at a time through f32, q/k/v and gate/up then
// stacked by copying, each tensor uploaded on its own. The oracle the streamed path must match bit for bit, and the
// baseline of the placement benchmark.
#pragma once

#include <cstring>
#include <initializer_list>
#include <vector>

#include "core/dequant.h"
#include "core/linear.h"
#include "core/quant_groups.h"
#include "model/decoder_weights.h"
#include "ops/ops.h"

namespace kestrel::testing {

// Rows converted one at a time through f32 (a tensor is a dense linear; grouped integer rows are decoded).
inline Tensor reference_convert(const Linear& l, DType to) {
  const Tensor& t = l.weight;
  if (t.empty() || (l.dense() && t.dtype == to)) return t;
  Tensor host = Tensor::empty_host(to, t.shape);
  std::vector<float> row(t.cols());
  for (int64_t r = 0; r < t.rows(); ++r) {
    dequantize_row(l, r, row.data());
    quantize_row(to, row.data(), host.row(r), t.cols());
  }
  return host;
}

// Parts of one dtype stacked by rows (1-D parts concatenated).
inline Tensor reference_stack(std::initializer_list<const Tensor*> parts) {
  const Tensor& first = **parts.begin();
  const bool vectors = first.ndim() == 1;
  int64_t rows = 0;
  for (const Tensor* p : parts) rows += vectors ? p->numel() : p->rows();
  Tensor out = Tensor::empty_host(first.dtype, vectors ? std::vector<int64_t>{rows} : std::vector{rows, first.cols()});
  char* dst = static_cast<char*>(out.data);
  for (const Tensor* p : parts) {
    std::memcpy(dst, p->data, p->nbytes());
    dst += p->nbytes();
  }
  return out;
}

// `dequantize` false: linear weights of a GGUF block type keep it (the embedding never does; grouped integer
// weights are always decoded); parts are stacked only where they end up in one type, and biases follow their
// weights.
inline DecoderWeights reference_to_device(const DecoderWeights& w, const ops::Context& ctx, DType dtype,
                                          bool dequantize = true) {
  auto convert = [&](const Linear& l) {
    const bool keep = !dequantize && l.dense() && quant::is_weight_type(l.weight.dtype);
    return reference_convert(l, keep ? l.weight.dtype : dtype);
  };
  auto upload = [&](const Tensor& t) { return t.empty() ? t : ops::upload(ctx, t); };
  DecoderWeights d;
  d.tok_embd = upload(reference_convert(w.tok_embd, dtype));
  d.output_norm = upload(reference_convert(w.output_norm, DType::F32));
  d.output = w.tied() ? Linear(d.tok_embd) : Linear(upload(convert(w.output)));
  for (const LayerWeights& L : w.layers) {
    LayerWeights D;
    for (size_t i = 0; i < D.vectors().size(); ++i) *D.vectors()[i] = reference_convert(*L.vectors()[i], DType::F32);
    for (size_t i = 0; i < D.linears().size(); ++i) *D.linears()[i] = Linear(convert(*L.linears()[i]));
    auto same = [](const Linear& a, const Linear& b) { return a.weight.dtype == b.weight.dtype; };
    if (D.wqkv.empty() && !D.wq.empty() && same(D.wq, D.wk) && same(D.wq, D.wv)) {
      D.wqkv = reference_stack({&D.wq.weight, &D.wk.weight, &D.wv.weight});
      if (!D.bq.empty()) D.bqkv = reference_stack({&D.bq, &D.bk, &D.bv});
      D.wq = D.wk = D.wv = Linear{};
      D.bq = D.bk = D.bv = Tensor{};
    }
    if (D.w_gate_up.empty() && !D.w_gate.empty() && same(D.w_gate, D.w_up)) {
      D.w_gate_up = reference_stack({&D.w_gate.weight, &D.w_up.weight});
      D.w_gate = D.w_up = Linear{};
    }
    for (Tensor* t : D.vectors()) *t = upload(*t);
    for (Linear* l : D.linears()) *l = Linear(upload(l->weight));
    d.layers.push_back(std::move(D));
  }
  return d;
}

}  // namespace kestrel::testing
