// How DecoderWeights::to_device placed weights before it streamed them through staging buffers: every
// tensor converted on the host one row at a time through f32, q/k/v and gate/up then stacked by copying,
// each tensor uploaded on its own. The oracle the streamed path must match bit for bit, and the baseline
// of the placement benchmark.
#pragma once

#include <cstring>
#include <initializer_list>
#include <vector>

#include "core/dequant.h"
#include "core/quant_groups.h"
#include "model/decoder_weights.h"
#include "ops/ops.h"

namespace kestrel::testing {

inline Tensor reference_convert(const Tensor& t, DType to) {
  if (t.empty() || t.dtype == to) return t;
  Tensor host = Tensor::empty_host(to, t.shape);
  std::vector<float> row(t.cols());
  for (int64_t r = 0; r < t.rows(); ++r) {
    dequantize_row(t.dtype, t.row(r), row.data(), t.cols());
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

// `dequantize` false: linear weights of a GGUF block type keep it (the embedding never does); parts are
// stacked only where they end up in one type, and biases follow their weights.
inline DecoderWeights reference_to_device(const DecoderWeights& w, const ops::Context& ctx, DType dtype,
                                          bool dequantize = true) {
  auto type_of = [&](const Tensor& t) {
    if (t.ndim() == 1) return DType::F32;
    return !dequantize && quant::is_weight_type(t.dtype) ? t.dtype : dtype;
  };
  auto convert = [&](const Tensor& t) { return reference_convert(t, type_of(t)); };
  auto upload = [&](const Tensor& t) { return t.empty() ? t : ops::upload(ctx, t); };
  DecoderWeights d;
  d.tok_embd = upload(reference_convert(w.tok_embd, dtype));
  d.output_norm = upload(convert(w.output_norm));
  d.output = w.output.data == w.tok_embd.data ? d.tok_embd : upload(convert(w.output));
  for (const LayerWeights& L : w.layers) {
    LayerWeights D = L;
    for (Tensor* t : D.fields()) *t = convert(*t);
    if (D.wqkv.empty() && !D.wq.empty() && D.wq.dtype == D.wk.dtype && D.wq.dtype == D.wv.dtype) {
      D.wqkv = reference_stack({&D.wq, &D.wk, &D.wv});
      if (!D.bq.empty()) D.bqkv = reference_stack({&D.bq, &D.bk, &D.bv});
      D.wq = D.wk = D.wv = D.bq = D.bk = D.bv = Tensor{};
    }
    if (D.w_gate_up.empty() && !D.w_gate.empty() && D.w_gate.dtype == D.w_up.dtype) {
      D.w_gate_up = reference_stack({&D.w_gate, &D.w_up});
      D.w_gate = D.w_up = Tensor{};
    }
    for (Tensor* t : D.fields()) *t = upload(*t);
    d.layers.push_back(std::move(D));
  }
  return d;
}

}  // namespace kestrel::testing
