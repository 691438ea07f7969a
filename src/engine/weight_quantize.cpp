#include "engine/weight_quantize.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>

#include "core/error.h"
#include "core/linear.h"
#include "core/thread_pool.h"
#include "engine/session.h"
#include "model/decoder.h"
#include "ops/context.h"

namespace kestrel {
namespace {

// The four inputs of a block's linears.
enum Input : uint8_t { AttnIn, AttnOut, FfnIn, FfnAct };
constexpr int kInputs = 4;

// The block linears a method quantizes, with the input each reads.
struct Member {
  LinearRole role;
  Input input;
  Linear LayerWeights::*field;
};
constexpr std::array<Member, 7> kMembers = {{{LinearRole::Q, AttnIn, &LayerWeights::wq},
                                             {LinearRole::K, AttnIn, &LayerWeights::wk},
                                             {LinearRole::V, AttnIn, &LayerWeights::wv},
                                             {LinearRole::O, AttnOut, &LayerWeights::wo},
                                             {LinearRole::Gate, FfnIn, &LayerWeights::w_gate},
                                             {LinearRole::Up, FfnIn, &LayerWeights::w_up},
                                             {LinearRole::Down, FfnAct, &LayerWeights::w_down}}};

std::string weight_name(int layer, LinearRole role) {
  return fmt::format("blk.{}.{}.weight", layer, linear_role_name(role));
}

// The input a reported linear reads, or -1 for a report that repeats one: unfused k and v read the rows q
// reported, unfused up those of gate (an observer sees fused projections once, under the fused id).
int input_of(LinearRole r) {
  switch (r) {
    case LinearRole::Q:
    case LinearRole::QKV: return AttnIn;
    case LinearRole::O: return AttnOut;
    case LinearRole::Gate:
    case LinearRole::GateUp: return FfnIn;
    case LinearRole::Down: return FfnAct;
    default: return -1;
  }
}

// What GPTQ and AWQ need of one input: H = sum x x^T and sum |x| over the calibration rows.
struct InputStats {
  int64_t k = 0, rows = 0;
  std::vector<double> hessian, sum_abs;

  std::vector<float> mean_abs() const {
    std::vector<float> m(static_cast<size_t>(k));
    for (int64_t j = 0; j < k; ++j) m[j] = rows ? static_cast<float>(sum_abs[j] / static_cast<double>(rows)) : 0.f;
    return m;
  }
};
using LayerStats = std::array<InputStats, kInputs>;

class LayerObserver final : public ops::LinearObserver {
 public:
  LayerObserver(int layer, const ModelConfig& c) : layer_(layer) {
    const std::array<int64_t, kInputs> widths = {c.hidden, int64_t{c.n_heads} * c.head_dim, c.hidden, c.ffn};
    for (int i = 0; i < kInputs; ++i) {
      stats_[i].k = widths[i];
      stats_[i].hessian.assign(static_cast<size_t>(widths[i] * widths[i]), 0.0);
      stats_[i].sum_abs.assign(static_cast<size_t>(widths[i]), 0.0);
    }
  }

  void observe(const LinearId& id, const Tensor& x) override {
    const int i = input_of(id.role);
    if (id.layer != layer_ || i < 0) return;
    InputStats& s = stats_[i];
    KS_CHECK(x.device == Device::Cpu && x.dtype == DType::F32 && x.cols() == s.k,
             "calibration: {} has input {}, expected f32 rows of {} on the CPU", id.name(), x.describe(), s.k);
    const int64_t t = x.rows();
    const std::span<const float> rows(x.ptr<float>(), static_cast<size_t>(t * s.k));
    quant::accumulate_hessian(s.hessian, rows, t, s.k);
    for (int64_t r = 0; r < t; ++r)
      for (int64_t j = 0; j < s.k; ++j) s.sum_abs[j] += std::abs(rows[r * s.k + j]);
    s.rows += t;
  }

  LayerStats take() { return std::move(stats_); }

 private:
  int layer_;
  LayerStats stats_;
};

// Layer `layer`'s input statistics over the calibration windows: the model cut after that layer, with the
// layers before it replaced by `before` (sequential GPTQ's quantized layers; empty: the float ones).
LayerStats observe_layer(const Decoder& model, ops::Context ctx, int layer, std::span<const LayerWeights> before,
                         std::span<const int32_t> tokens, int n_ctx, const std::function<void()>& window_done) {
  ModelConfig c = model.config();
  c.n_layers = layer + 1;
  DecoderWeights w = model.weights();
  w.layers.resize(static_cast<size_t>(layer) + 1);
  std::copy(before.begin(), before.end(), w.layers.begin());
  Decoder cut(model.architecture(), c, std::move(w));
  LayerObserver observer(layer, c);
  ctx.observer = &observer;
  SessionOptions so;
  so.n_ctx = n_ctx;
  so.n_batch = n_ctx;
  Session session(cut, ctx, so);
  for (size_t at = 0; at < tokens.size(); at += static_cast<size_t>(n_ctx)) {
    session.truncate(0);
    session.feed(tokens.subspan(at, std::min<size_t>(n_ctx, tokens.size() - at)));
    window_done();
  }
  return observer.take();
}

std::vector<float> float_weight(const Linear& l) {
  const int64_t n = l.out_features(), k = l.in_features();
  std::vector<float> w(static_cast<size_t>(n * k));
  for (int64_t r = 0; r < n; ++r) dequantize_row(l, r, w.data() + r * k);
  return w;
}

// H of the input x / s: diag(1/s) H diag(1/s).
std::vector<double> scaled_hessian(const InputStats& s, std::span<const float> scale) {
  std::vector<double> h = s.hessian;
  for (int64_t i = 0; i < s.k; ++i)
    for (int64_t j = 0; j < s.k; ++j) h[i * s.k + j] /= static_cast<double>(scale[i]) * scale[j];
  return h;
}

// One layer's linears as float matrices, in kMembers' order.
std::array<std::vector<float>, kMembers.size()> layer_weights(const LayerWeights& L) {
  std::array<std::vector<float>, kMembers.size()> w;
  ThreadPool::global().parallel_for(static_cast<int64_t>(kMembers.size()), [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) w[m] = float_weight(L.*kMembers[m].field);
  });
  return w;
}

// AWQ for one layer: a scale per input channel for each group of linears that read one input, folded into
// what produces that input (the norms; v's rows for o, up's rows for down), then each linear quantized with
// its clip search. o is scaled only where v's rows are its input channels one to one (as many kv heads as
// heads), as the AWQ reference does.
void awq_layer(const ModelConfig& c, const LayerWeights& L, int layer, const LayerStats& stats,
               const WeightQuantOptions& opt, QuantizedWeights& out) {
  auto w = layer_weights(L);
  enum : size_t { q, k, v, o, gate, up, down };
  auto linear = [&](size_t m) { return quant::AwqLinear{w[m], (L.*kMembers[m].field).out_features()}; };
  struct Group {
    Input input;
    std::vector<size_t> members;
  };
  std::vector<Group> groups = {{AttnIn, {q, k, v}}, {FfnIn, {gate, up}}, {FfnAct, {down}}};
  if (c.n_heads == c.n_kv_heads) groups.push_back({AttnOut, {o}});
  std::array<std::vector<float>, kInputs> scale;
  for (int i = 0; i < kInputs; ++i) scale[i].assign(static_cast<size_t>(stats[i].k), 1.f);
  // Every search sees the weights as they were (the reference searches all groups, then applies them). Each
  // search spreads its grid over the thread pool.
  for (const Group& g : groups) {
    std::vector<quant::AwqLinear> ls;
    for (size_t m : g.members) ls.push_back(linear(m));
    const InputStats& s = stats[g.input];
    scale[g.input] = quant::awq_search_scales(ls, s.k, s.mean_abs(), s.hessian, opt.spec, opt.awq).s;
  }
  // Columns times the scale of their input; the producers' rows (v for o, up for down) divided by the next's.
  for (size_t m = 0; m < kMembers.size(); ++m) {
    const int64_t n = (L.*kMembers[m].field).out_features(), kk = stats[kMembers[m].input].k;
    const std::vector<float>& cs = scale[kMembers[m].input];
    const std::vector<float>* rs = m == v ? &scale[AttnOut] : m == up ? &scale[FfnAct] : nullptr;
    for (int64_t r = 0; r < n; ++r)
      for (int64_t j = 0; j < kk; ++j) w[m][r * kk + j] *= cs[j] / (rs ? (*rs)[r] : 1.f);
    const std::string name = weight_name(layer, kMembers[m].role);
    out.column_scales[name] = cs;
    if (rs) out.row_scales[name] = *rs;
  }
  auto fold = [&](const Tensor& t, const std::string& name, const std::vector<float>& s) {
    std::vector<float> f(t.ptr<float>(), t.ptr<float>() + t.numel());
    for (size_t j = 0; j < f.size(); ++j) f[j] /= s[j];
    out.folded[name] = std::move(f);
  };
  fold(L.attn_norm, fmt::format("blk.{}.attn_norm.weight", layer), scale[AttnIn]);
  fold(L.ffn_norm, fmt::format("blk.{}.ffn_norm.weight", layer), scale[FfnIn]);
  if (!L.bv.empty() && c.n_heads == c.n_kv_heads) fold(L.bv, fmt::format("blk.{}.attn_v.bias", layer), scale[AttnOut]);
  std::array<quant::IntQuantized, kMembers.size()> qs;
  ThreadPool::global().parallel_for(static_cast<int64_t>(kMembers.size()), [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) {
      const Input in = kMembers[m].input;
      qs[m] =
          quant::awq_quantize(w[m], linear(m).n, stats[in].k, scaled_hessian(stats[in], scale[in]), opt.spec, opt.awq);
    }
  });
  for (size_t m = 0; m < kMembers.size(); ++m) out.linears[weight_name(layer, kMembers[m].role)] = std::move(qs[m]);
}

// RTN or GPTQ for one layer: each linear on its own (GPTQ with the Hessian of its input).
void rtn_or_gptq_layer(const LayerWeights& L, int layer, const LayerStats* stats, const WeightQuantOptions& opt,
                       QuantizedWeights& out) {
  std::array<quant::IntQuantized, kMembers.size()> qs;
  ThreadPool::global().parallel_for(static_cast<int64_t>(kMembers.size()), [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) {
      const Linear& l = L.*kMembers[m].field;
      const std::vector<float> w = float_weight(l);
      const int64_t n = l.out_features(), k = l.in_features();
      qs[m] = stats ? quant::quantize_gptq(w, n, k, (*stats)[kMembers[m].input].hessian, opt.spec, opt.gptq)
                    : quant::quantize_rtn(w, n, k, opt.spec);
    }
  });
  for (size_t m = 0; m < kMembers.size(); ++m) out.linears[weight_name(layer, kMembers[m].role)] = std::move(qs[m]);
}

void check_float_linears(const DecoderWeights& w, const quant::IntQuantSpec& spec) {
  for (size_t l = 0; l < w.layers.size(); ++l)
    for (const Member& m : kMembers) {
      const Linear& lin = w.layers[l].*m.field;
      const std::string name = weight_name(static_cast<int>(l), m.role);
      KS_CHECK(!lin.empty(),
               "{}: missing: the decoder has run a step, which fused its projections; quantize a freshly loaded model",
               name);
      const DType t = lin.weight.dtype;
      KS_CHECK(lin.dense() && (t == DType::F32 || t == DType::F16 || t == DType::BF16),
               "{} is {}: quantize reads float weights (f32, f16, bf16), not an already quantized model", name,
               lin.describe());
      try {
        quant::check_int_quant_spec(spec, lin.in_features());
      } catch (const Error& e) {
        KS_FAIL("{}: {}", name, e.what());
      }
    }
}

}  // namespace

std::vector<float> QuantizedWeights::effective_weight(const std::string& name) const {
  const auto it = linears.find(name);
  KS_CHECK(it != linears.end(), "no quantized linear '{}'", name);
  std::vector<float> w = it->second.dequantize();
  const int64_t n = it->second.n, k = it->second.k;
  const auto cs = column_scales.find(name), rs = row_scales.find(name);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < k; ++j) {
      if (cs != column_scales.end()) w[r * k + j] /= cs->second[j];
      if (rs != row_scales.end()) w[r * k + j] *= rs->second[r];
    }
  return w;
}

QuantizedWeights quantize_weights(const Decoder& model, const ops::Context& ctx, std::span<const int32_t> tokens,
                                  const WeightQuantOptions& opt,
                                  const std::function<void(int64_t, int64_t)>& progress) {
  const DecoderWeights& w = model.weights();
  check_float_linears(w, opt.spec);
  const bool calibrated = opt.method != WeightQuantMethod::Rtn;
  KS_CHECK(!calibrated || !tokens.empty(), "GPTQ and AWQ need calibration text");
  KS_CHECK(opt.n_ctx > 0, "the calibration window must hold at least one token");
  KS_CHECK(ctx.device == Device::Cpu, "weight quantization runs on the CPU");
  const int n_layers = static_cast<int>(w.layers.size());
  const int64_t windows = calibrated ? (static_cast<int64_t>(tokens.size()) + opt.n_ctx - 1) / opt.n_ctx : 0;
  const int64_t total = n_layers * (windows + 1);
  int64_t done = 0;
  auto tick = [&] {
    if (progress) progress(++done, total);
  };
  QuantizedWeights out;
  std::vector<LayerWeights> quantized;  // sequential GPTQ: the layers done so far, as grouped linears
  for (int l = 0; l < n_layers; ++l) {
    const LayerWeights& L = w.layers[l];
    LayerStats stats;
    if (calibrated) stats = observe_layer(model, ctx, l, quantized, tokens, opt.n_ctx, tick);
    if (opt.method == WeightQuantMethod::Awq)
      awq_layer(model.config(), L, l, stats, opt, out);
    else
      rtn_or_gptq_layer(L, l, calibrated ? &stats : nullptr, opt, out);
    if (opt.method == WeightQuantMethod::Gptq) {
      LayerWeights q = L;
      for (const Member& m : kMembers)
        q.*m.field = quant::to_linear(out.linears.at(weight_name(l, m.role)), LinearId{l, m.role});
      quantized.push_back(std::move(q));
    }
    tick();
  }
  return out;
}

}  // namespace kestrel
