// `kestrel quantize --method rtn|gptq|awq` below the CLI: the linear observer sees every linear's input by
// id; calibration from the kept residual stream gives exactly what the model cut after each layer gives; a
// quantized tiny-llama written as a GPTQ checkpoint loads back to exactly the codes in memory; GPTQ and AWQ
// leave less layer-output error than round to nearest; bad inputs are refused by name.
#include "engine/weight_quantize.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <iterator>
#include <map>

#include "../formats/test_files.h"
#include "../model/test_paths.h"
#include "backends/backends.h"
#include "calibration_text.h"
#include "core/linear.h"
#include "engine/session.h"
#include "model/gptq_checkpoint.h"
#include "model/model.h"
#include "ops/context.h"

namespace kestrel {
namespace {

const std::string kModel = test::fixture("models/tiny-llama");

// Every report: the id's name, the rows' shape, and per id H = sum x x^T and sum |x| over the rows.
struct Recorder final : ops::LinearObserver {
  std::map<std::string, std::vector<std::vector<int64_t>>> shapes;
  std::map<std::string, std::vector<double>> hessians, sum_abs;
  std::map<std::string, int64_t> rows;
  void observe(const LinearId& id, const Tensor& x) override {
    shapes[id.name()].push_back(x.shape);
    const int64_t t = x.rows(), k = x.cols();
    std::vector<double>& h = hessians[id.name()];
    h.resize(static_cast<size_t>(k * k));
    quant::accumulate_hessian(h, std::span(x.ptr<float>(), static_cast<size_t>(x.numel())), t, k);
    std::vector<double>& a = sum_abs[id.name()];
    a.resize(static_cast<size_t>(k));
    for (int64_t r = 0; r < t; ++r)
      for (int64_t j = 0; j < k; ++j) a[j] += std::abs(x.ptr<float>()[r * k + j]);
    rows[id.name()] += t;
  }
};

// Runs `d` (a fresh decoder: this places it) over `tokens` in windows of `n_ctx` with a Recorder.
Recorder record(Decoder d, std::span<const int32_t> tokens, int n_ctx) {
  Recorder r;
  ops::Context ctx = backends::make_context(Device::Cpu);
  ctx.observer = &r;
  SessionOptions so;
  so.n_ctx = n_ctx;
  so.n_batch = n_ctx;
  Session s(d, ctx, so);
  for (size_t at = 0; at < tokens.size(); at += n_ctx) {
    s.truncate(0);
    s.feed(tokens.subspan(at, std::min<size_t>(n_ctx, tokens.size() - at)));
  }
  return r;
}

// A copy of a decoder that has not run (its projections unfused).
Decoder fresh(const Decoder& d) {
  return Decoder(d.architecture(), d.config(), d.weights());
}

TEST(LinearObserver, SeesEveryLinearInputByIdOnce) {
  auto m = load_model(kModel);
  const std::vector<int32_t> tokens = test::calibration(*m, 40);
  const Recorder r = record(fresh(*m->decoder), tokens, 32);  // windows of 32 and 8 tokens
  const ModelConfig& c = m->config();
  std::map<std::string, int64_t> want;  // fused on the CPU: q/k/v and gate/up report once, under the fused id
  for (int l = 0; l < c.n_layers; ++l) {
    want[fmt::format("blk.{}.attn_qkv", l)] = c.hidden;
    want[fmt::format("blk.{}.attn_output", l)] = int64_t{c.n_heads} * c.head_dim;
    want[fmt::format("blk.{}.ffn_gate_up", l)] = c.hidden;
    want[fmt::format("blk.{}.ffn_down", l)] = c.ffn;
  }
  want["output"] = c.hidden;
  ASSERT_EQ(r.shapes.size(), want.size());
  for (const auto& [name, k] : want) {
    ASSERT_TRUE(r.shapes.contains(name)) << name;
    const auto& calls = r.shapes.at(name);
    if (name == "output") {  // only the last row of each window is projected to the vocabulary
      EXPECT_EQ(calls, (std::vector<std::vector<int64_t>>{{1, k}, {1, k}}));
    } else {
      EXPECT_EQ(calls, (std::vector<std::vector<int64_t>>{{32, k}, {8, k}})) << name;
    }
  }
}

std::vector<std::string> block_linears(const ModelConfig& c) {
  std::vector<std::string> names;
  for (int l = 0; l < c.n_layers; ++l)
    for (const char* role : {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"})
      names.push_back(fmt::format("blk.{}.{}.weight", l, role));
  return names;
}

const Linear& linear_named(const DecoderWeights& w, const std::string& name) {
  for (const LayerWeights& L : w.layers)
    for (const Linear* l : L.linears())
      if (!l->empty() && l->id.name() + ".weight" == name) return *l;
  throw std::runtime_error("no linear " + name);
}

// The id under which a fused model reports the input of weight `name` ("blk.0.attn_k.weight" ->
// "blk.0.attn_qkv").
std::string input_of(const std::string& name) {
  const std::string id = name.substr(0, name.size() - 7);  // "blk.N.attn_q"
  const std::string layer = id.substr(0, id.find('.', 4));
  if (id.ends_with("attn_output") || id.ends_with("ffn_down")) return id;
  return layer + (id.find("attn") != std::string::npos ? ".attn_qkv" : ".ffn_gate_up");
}

std::vector<float> float_weight(const Linear& l) {
  std::vector<float> w(static_cast<size_t>(l.out_features() * l.in_features()));
  for (int64_t r = 0; r < l.out_features(); ++r) dequantize_row(l, r, w.data() + r * l.in_features());
  return w;
}

// tiny-llama's blocks repeated to `n` layers: deep enough that calibration passes start from a kept residual
// stream rather than from the tokens.
Decoder deepened(const Model& m, int n) {
  ModelConfig c = m.config();
  DecoderWeights w = m.decoder->weights();
  const std::vector<LayerWeights> blocks = w.layers;
  w.layers.clear();
  for (int l = 0; l < n; ++l) {
    LayerWeights L = blocks[l % blocks.size()];
    for (Linear* lin : L.linears())
      if (!lin->empty()) lin->id.layer = l;
    w.layers.push_back(std::move(L));
  }
  c.n_layers = n;
  return Decoder(m.decoder->architecture(), c, std::move(w));
}

// Layer `layer`'s input statistics as calibration gathered them before it kept the residual stream: the model
// cut after that layer, with the layers before it replaced by `before`, over every window.
Recorder cut_model(const Decoder& model, int layer, std::span<const LayerWeights> before,
                   std::span<const int32_t> tokens, int n_ctx) {
  ModelConfig c = model.config();
  c.n_layers = layer + 1;
  DecoderWeights w = model.weights();
  w.layers.resize(static_cast<size_t>(layer) + 1);
  std::copy(before.begin(), before.end(), w.layers.begin());
  return record(Decoder(model.architecture(), c, std::move(w)), tokens, n_ctx);
}

// Sequential GPTQ: each layer's codes are those GPTQ gives with the Hessians of the model cut after it, the
// layers before it quantized as quantize_weights quantized them. AWQ: each layer's scales are those its
// search gives with the float model's statistics (what every cut of the float model computes for its last
// layer), so the activation means match as well as the Hessians.
TEST(WeightQuantize, CalibrationMatchesTheModelCutAfterEachLayer) {
  auto m = load_model(kModel);
  const Decoder model = deepened(*m, 5);
  const std::vector<int32_t> tokens = test::calibration(*m, 200);  // windows of 64, 64, 64 and 8 tokens
  WeightQuantOptions opt;
  opt.spec = {4, 32, false};
  opt.n_ctx = 64;
  opt.method = WeightQuantMethod::Gptq;
  const QuantizedWeights gptq = quantize_weights(model, backends::make_context(Device::Cpu), tokens, opt);
  std::vector<LayerWeights> before;
  for (int l = 0; l < model.config().n_layers; ++l) {
    const Recorder r = cut_model(model, l, before, tokens, opt.n_ctx);
    LayerWeights quantized = model.weights().layers[l];
    for (Linear* lin : quantized.linears()) {
      if (lin->empty()) continue;
      const std::string name = lin->id.name() + ".weight";
      const quant::IntQuantized want = quant::quantize_gptq(float_weight(*lin), lin->out_features(), lin->in_features(),
                                                            r.hessians.at(input_of(name)), opt.spec, opt.gptq);
      const quant::IntQuantized& got = gptq.linears.at(name);
      EXPECT_EQ(got.codes, want.codes) << name;
      EXPECT_EQ(got.scales, want.scales) << name;
      EXPECT_EQ(got.zeros, want.zeros) << name;
      *lin = quant::to_linear(got, lin->id);
    }
    before.push_back(std::move(quantized));
  }

  opt.method = WeightQuantMethod::Awq;
  const QuantizedWeights awq = quantize_weights(model, backends::make_context(Device::Cpu), tokens, opt);
  const Recorder r = record(fresh(model), tokens, opt.n_ctx);
  ASSERT_NE(model.config().n_heads, model.config().n_kv_heads);  // o is not scaled
  for (int l = 0; l < model.config().n_layers; ++l) {
    const LayerWeights& L = model.weights().layers[l];
    for (const std::vector<const Linear*>& group :
         {std::vector<const Linear*>{&L.wq, &L.wk, &L.wv}, {&L.w_gate, &L.w_up}, {&L.w_down}}) {
      std::vector<std::vector<float>> w;
      std::vector<quant::AwqLinear> ls;
      for (const Linear* lin : group) w.push_back(float_weight(*lin));
      for (size_t i = 0; i < group.size(); ++i) ls.push_back({w[i], group[i]->out_features()});
      const std::string name = group[0]->id.name() + ".weight", input = input_of(name);
      const int64_t k = group[0]->in_features();
      std::vector<float> mean_abs(static_cast<size_t>(k));
      for (int64_t j = 0; j < k; ++j)
        mean_abs[j] = static_cast<float>(r.sum_abs.at(input)[j] / static_cast<double>(r.rows.at(input)));
      const quant::AwqScales want = quant::awq_search_scales(ls, k, mean_abs, r.hessians.at(input), opt.spec, opt.awq);
      EXPECT_EQ(awq.column_scales.at(name), want.s) << name;
    }
  }
}

struct Case {
  WeightQuantMethod method;
  quant::IntQuantSpec spec;
  bool act_order;
};

class RoundTrip : public ::testing::TestWithParam<Case> {};

// The checkpoint written from a quantization loads (through hf_quant.cpp) to exactly its dequantized codes,
// and AWQ's folded norms to the values folded.
TEST_P(RoundTrip, CheckpointLoadsToTheCodesInMemory) {
  const Case& cs = GetParam();
  auto m = load_model(kModel);
  WeightQuantOptions opt;
  opt.method = cs.method;
  opt.spec = cs.spec;
  opt.gptq.act_order = cs.act_order;
  opt.n_ctx = 64;
  const std::vector<int32_t> tokens = test::calibration(*m, 256);
  QuantizedWeights q = quantize_weights(*m->decoder, backends::make_context(Device::Cpu), tokens, opt);
  ASSERT_EQ(q.linears.size(), block_linears(m->config()).size());
  test::ScratchDir dir;
  GptqCheckpoint c;
  c.linears = q.linears;
  c.replaced = q.folded;
  c.quantization_config = {
      {"quant_method", "gptq"},   {"bits", cs.spec.bits}, {"group_size", cs.spec.group > 0 ? cs.spec.group : -1},
      {"desc_act", cs.act_order}, {"sym", cs.spec.sym},   {"checkpoint_format", "gptq_v2"}};
  write_gptq_checkpoint(c, m->decoder->architecture(), kModel, dir.path("out"));
  auto back = load_model(dir.path("out"));
  ASSERT_FALSE(back->quantization.empty());
  const DecoderWeights& w = back->decoder->weights();
  for (const std::string& name : block_linears(m->config())) {
    const Linear& l = linear_named(w, name);
    ASSERT_FALSE(l.dense()) << name;
    EXPECT_EQ(l.bits(), cs.spec.bits) << name;
    const quant::IntQuantized& iq = q.linears.at(name);
    const std::vector<float> want = iq.dequantize();
    std::vector<float> row(static_cast<size_t>(iq.k));
    for (int64_t r = 0; r < iq.n; ++r) {
      dequantize_row(l, r, row.data());
      for (int64_t k = 0; k < iq.k; ++k) ASSERT_EQ(row[k], want[r * iq.k + k]) << name << " [" << r << ", " << k << "]";
    }
  }
  EXPECT_EQ(q.folded.empty(), cs.method != WeightQuantMethod::Awq);
  for (const auto& [name, values] : q.folded) {
    const int layer = std::stoi(name.substr(4));
    const Tensor& t = name.ends_with("attn_norm.weight") ? w.layers[layer].attn_norm : w.layers[layer].ffn_norm;
    ASSERT_EQ(t.numel(), static_cast<int64_t>(values.size()));
    for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(t.ptr<float>()[i], values[i]) << name;
  }
  // The float tensors not quantized are copied as they were.
  const Tensor a = m->decoder->weights().output.weight, b = w.output.weight;
  ASSERT_EQ(a.nbytes(), b.nbytes());
  EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes()), 0);
}

INSTANTIATE_TEST_SUITE_P(Methods, RoundTrip,
                         ::testing::Values(Case{WeightQuantMethod::Rtn, {4, 32, false}, false},
                                           Case{WeightQuantMethod::Rtn, {8, -1, true}, false},
                                           Case{WeightQuantMethod::Gptq, {3, 64, false}, true},
                                           Case{WeightQuantMethod::Gptq, {2, 32, true}, false},
                                           Case{WeightQuantMethod::Awq, {4, 32, false}, false}));

// tr((W - V) H (W - V)^T): the squared output error of V in place of W on inputs with H = sum x x^T.
double output_error(std::span<const float> w, std::span<const float> v, std::span<const double> h, int64_t k) {
  const int64_t n = static_cast<int64_t>(w.size()) / k;
  double loss = 0;
  std::vector<double> e(static_cast<size_t>(k));
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t j = 0; j < k; ++j) e[j] = double{w[r * k + j]} - v[r * k + j];
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < k; ++j) loss += e[i] * h[i * k + j] * e[j];
  }
  return loss;
}

// At 3 bits, with the float model's inputs on held-out text, the linears GPTQ and AWQ choose (AWQ's in the
// float model's coordinates) leave less output error than round to nearest.
TEST(WeightQuantize, GptqAndAwqBeatRoundToNearestAt3Bits) {
  auto m = load_model(kModel);
  const std::vector<int32_t> all = test::calibration(*m, 1024);
  const std::span<const int32_t> calib = std::span(all).first(512), held_out = std::span(all).subspan(512);
  const Recorder r = record(fresh(*m->decoder), held_out, 128);
  std::map<WeightQuantMethod, double> loss;
  for (WeightQuantMethod method : {WeightQuantMethod::Rtn, WeightQuantMethod::Gptq, WeightQuantMethod::Awq}) {
    WeightQuantOptions opt;
    opt.method = method;
    opt.spec = {3, 32, false};
    opt.n_ctx = 128;
    const QuantizedWeights q = quantize_weights(*m->decoder, backends::make_context(Device::Cpu), calib, opt);
    for (const std::string& name : block_linears(m->config())) {
      const Linear& l = linear_named(m->decoder->weights(), name);
      loss[method] +=
          output_error(float_weight(l), q.effective_weight(name), r.hessians.at(input_of(name)), l.in_features());
    }
  }
  EXPECT_LT(loss[WeightQuantMethod::Gptq], loss[WeightQuantMethod::Rtn]);
  EXPECT_LT(loss[WeightQuantMethod::Awq], loss[WeightQuantMethod::Rtn]);
  RecordProperty("rtn", std::to_string(loss[WeightQuantMethod::Rtn]));
  RecordProperty("gptq", std::to_string(loss[WeightQuantMethod::Gptq]));
  RecordProperty("awq", std::to_string(loss[WeightQuantMethod::Awq]));
}

// Rows [Hkv * d, ...] of a k or v weight (or bias) with each kv head's d rows repeated for the `group` query
// heads that share it, as f32.
Tensor repeat_heads(const Tensor& t, int group, int64_t d) {
  const int64_t k = t.ndim() == 2 ? t.cols() : 1, rows = t.numel() / k;
  std::vector<int64_t> shape = t.shape;
  shape[0] = rows * group;
  Tensor out = Tensor::empty_host(DType::F32, shape);
  for (int64_t r = 0; r < rows * group; ++r) {
    const int64_t src = (r / (d * group)) * d + r % d;
    for (int64_t j = 0; j < k; ++j) out.ptr<float>()[r * k + j] = t.ptr<float>()[src * k + j];
  }
  return out;
}

// A decoder of `m`'s architecture and config (with `n_kv_heads`) over `w`.
std::unique_ptr<Decoder> decoder_of(const Model& m, int n_kv_heads, DecoderWeights w) {
  ModelConfig c = m.config();
  c.n_kv_heads = n_kv_heads;
  return std::make_unique<Decoder>(m.decoder->architecture(), c, std::move(w));
}

Tensor logits_of(Decoder& d, std::span<const int32_t> tokens) {
  SessionOptions so;
  so.n_ctx = static_cast<int>(tokens.size());
  so.n_batch = so.n_ctx;
  Session s(d, backends::make_context(Device::Cpu), so);
  return s.feed(tokens, /*all_logits=*/true);
}

// AWQ on a model with as many kv heads as heads (tiny-qwen2, whose v has a bias, made multi-head by repeating
// its kv heads: the same function) scales o too, folding 1/s into v's rows and bias. The quantized model,
// folded norms and bias included, computes what the float model does with each linear's effective weight.
TEST(WeightQuantize, AwqFoldsItsScalesExactly) {
  auto m = load_model(test::fixture("models/tiny-qwen2"));
  const ModelConfig& c = m->config();
  const int group = c.n_heads / c.n_kv_heads;
  ASSERT_GT(group, 1);
  DecoderWeights mha = m->decoder->weights();
  for (LayerWeights& L : mha.layers) {
    for (Linear* l : {&L.wk, &L.wv}) {
      const LinearId id = l->id;
      *l = Linear(repeat_heads(l->weight, group, c.head_dim));
      l->id = id;
    }
    ASSERT_FALSE(L.bv.empty());
    L.bk = repeat_heads(L.bk, group, c.head_dim);
    L.bv = repeat_heads(L.bv, group, c.head_dim);
  }
  const std::vector<int32_t> tokens = test::calibration(*m, 512);
  const auto prompt = std::span(tokens).first(48);
  auto float_mha = decoder_of(*m, c.n_heads, mha);
  {
    const Tensor a = logits_of(*float_mha, prompt), b = logits_of(*m->decoder, prompt);
    for (int64_t i = 0; i < a.numel(); ++i) ASSERT_NEAR(a.ptr<float>()[i], b.ptr<float>()[i], 1e-4);
  }
  WeightQuantOptions opt;
  opt.method = WeightQuantMethod::Awq;
  opt.spec = {4, 32, false};
  opt.n_ctx = 128;
  // A decoder that has run a step holds its projections fused; quantize_weights reads the parts of a fresh one.
  const QuantizedWeights q =
      quantize_weights(*decoder_of(*m, c.n_heads, mha), backends::make_context(Device::Cpu), tokens, opt);
  ASSERT_TRUE(q.row_scales.contains("blk.0.attn_v.weight"));
  ASSERT_TRUE(q.column_scales.contains("blk.0.attn_output.weight"));
  ASSERT_TRUE(q.folded.contains("blk.0.attn_v.bias"));
  DecoderWeights quantized = mha, effective = mha;
  for (size_t l = 0; l < mha.layers.size(); ++l) {
    LayerWeights &Q = quantized.layers[l], &E = effective.layers[l];
    for (size_t i = 0; i < Q.linears().size(); ++i) {
      Linear &lq = *Q.linears()[i], &le = *E.linears()[i];
      if (lq.empty()) continue;
      const std::string name = lq.id.name() + ".weight";
      lq = quant::to_linear(q.linears.at(name), lq.id);
      const std::vector<float> w = q.effective_weight(name);
      Tensor t = Tensor::empty_host(DType::F32, {lq.out_features(), lq.in_features()});
      std::copy(w.begin(), w.end(), t.ptr<float>());
      le = Linear(t);
      le.id = lq.id;
    }
    auto folded = [&](const std::string& name) {
      const std::vector<float>& v = q.folded.at(fmt::format("blk.{}.{}", l, name));
      Tensor t = Tensor::empty_host(DType::F32, {static_cast<int64_t>(v.size())});
      std::copy(v.begin(), v.end(), t.ptr<float>());
      return t;
    };
    Q.attn_norm = folded("attn_norm.weight");
    Q.ffn_norm = folded("ffn_norm.weight");
    Q.bv = folded("attn_v.bias");
  }
  auto dq = decoder_of(*m, c.n_heads, quantized), de = decoder_of(*m, c.n_heads, effective);
  const Tensor a = logits_of(*dq, prompt), b = logits_of(*de, prompt);
  float top = 0;
  for (int64_t i = 0; i < b.numel(); ++i) top = std::max(top, std::abs(b.ptr<float>()[i]));
  for (int64_t i = 0; i < a.numel(); ++i) ASSERT_NEAR(a.ptr<float>()[i], b.ptr<float>()[i], 1e-4f * top) << i;
}

TEST(WeightQuantize, RefusesWhatItCannotQuantize) {
  const auto ctx = backends::make_context(Device::Cpu);
  auto gguf = load_model(test::fixture("models/tiny-llama-q8_0.gguf"));
  test::expect_error([&] { quantize_weights(*gguf->decoder, ctx, {}, {}); },
                     {"blk.0.attn_q.weight", "q8_0", "not an already quantized model"});
  auto m = load_model(kModel);
  WeightQuantOptions gptq;
  gptq.method = WeightQuantMethod::Gptq;
  gptq.spec = {4, 32, false};
  test::expect_error([&] { quantize_weights(*m->decoder, ctx, {}, gptq); }, {"need calibration text"});
  WeightQuantOptions wide;
  wide.spec = {4, 48, false};
  test::expect_error([&] { quantize_weights(*m->decoder, ctx, {}, wide); }, {"blk.0.attn_q.weight", "group 48"});
  test::expect_error([] { check_gptq_shape(40, 3, "blk.0.ffn_down"); }, {"blk.0.ffn_down", "32-bit words"});
}

}  // namespace
}  // namespace kestrel
