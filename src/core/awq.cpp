#include "core/awq.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace kestrel::quant {
namespace {

// e^T H e over the inputs [c0, c1) of one row's error e (indexed by input).
double output_error(std::span<const double> e, std::span<const double> hessian, int64_t k, int64_t c0, int64_t c1) {
  double loss = 0;
  for (int64_t i = c0; i < c1; ++i) {
    if (e[i] == 0) continue;
    double he = 0;
    const double* hi = hessian.data() + i * k;
    for (int64_t j = c0; j < c1; ++j) he += hi[j] * e[j];
    loss += e[i] * he;
  }
  return loss;
}

// Output error of round to nearest of w * s (then divided by s again), summed over the rows: the error
// in the original units, since (w - Q(w s) / s) x = (w s - Q(w s)) (x / s).
double scaled_rtn_error(const AwqLinear& l, int64_t k, std::span<const float> s, std::span<const double> hessian,
                        const IntQuantSpec& spec) {
  std::vector<float> ws(l.w.size());
  for (int64_t r = 0; r < l.n; ++r)
    for (int64_t c = 0; c < k; ++c) ws[r * k + c] = l.w[r * k + c] * s[c];
  const std::vector<float> dq = quantize_rtn(ws, l.n, k, spec).dequantize();
  std::vector<double> e(static_cast<size_t>(k));
  double loss = 0;
  for (int64_t r = 0; r < l.n; ++r) {
    for (int64_t c = 0; c < k; ++c) e[c] = static_cast<double>(l.w[r * k + c]) - dq[r * k + c] / s[c];
    loss += output_error(e, hessian, k, 0, k);
  }
  return loss;
}

}  // namespace

AwqScales awq_search_scales(std::span<const AwqLinear> linears, int64_t k, std::span<const float> mean_abs_x,
                            std::span<const double> hessian, const IntQuantSpec& spec, const AwqOptions& opt) {
  check_int_quant_spec(spec, k);
  KS_CHECK(static_cast<int64_t>(mean_abs_x.size()) == k && static_cast<int64_t>(hessian.size()) == k * k,
           "awq_search_scales: expected {} activation means and a {}x{} Hessian", k, k, k);
  KS_CHECK(opt.grid > 0, "awq: the alpha grid needs at least one point");
  for (const AwqLinear& l : linears)
    KS_CHECK(static_cast<int64_t>(l.w.size()) == l.n * k, "awq_search_scales: a linear has {} weights, not {}x{}",
             l.w.size(), l.n, k);
  AwqScales best;
  best.loss = std::numeric_limits<double>::infinity();
  std::vector<float> s(static_cast<size_t>(k));
  for (int g = 0; g < opt.grid; ++g) {
    const float alpha = static_cast<float>(g) / static_cast<float>(opt.grid);
    // s = mean|x|^alpha, normalized so that sqrt(max * min) = 1 (AWQ's normalization keeps the weights'
    // overall scale; channels never seen get the smallest seen scale rather than 0).
    float lo = std::numeric_limits<float>::infinity(), hi = 0;
    for (int64_t c = 0; c < k; ++c) {
      s[c] = mean_abs_x[c] > 0 ? std::pow(mean_abs_x[c], alpha) : 0.f;
      if (s[c] > 0) lo = std::min(lo, s[c]), hi = std::max(hi, s[c]);
    }
    const float norm = hi > 0 ? std::sqrt(lo * hi) : 1.f;
    for (int64_t c = 0; c < k; ++c) s[c] = (s[c] > 0 ? s[c] : lo) / norm;
    double loss = 0;
    for (const AwqLinear& l : linears) loss += scaled_rtn_error(l, k, s, hessian, spec);
    if (g == 0) best.loss_unscaled = loss;
    if (loss < best.loss) best.loss = loss, best.alpha = alpha, best.s = s;
  }
  return best;
}

IntQuantized awq_quantize(std::span<const float> w, int64_t n, int64_t k, std::span<const double> hessian,
                          const IntQuantSpec& spec, const AwqOptions& opt) {
  check_int_quant_spec(spec, k);
  KS_CHECK(static_cast<int64_t>(w.size()) == n * k && static_cast<int64_t>(hessian.size()) == k * k,
           "awq_quantize: expected {}x{} weights and a {}x{} Hessian", n, k, k, k);
  IntQuantized q = quantize_rtn(w, n, k, spec);
  if (!opt.clip_search || opt.clip_grid <= 0) return q;
  const int64_t gs = q.group_size(), G = q.groups();
  std::vector<double> e(static_cast<size_t>(k), 0.0);
  IntQuantSpec clipped = spec;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t g = 0; g < G; ++g) {
      const auto values = w.subspan(r * k + g * gs, gs);
      double best = std::numeric_limits<double>::infinity();
      for (int i = 0; i < opt.clip_grid; ++i) {
        clipped.clip = spec.clip * (1.f - 0.5f * static_cast<float>(i) / static_cast<float>(opt.clip_grid));
        const GroupParams p = group_params(values, clipped);
        for (int64_t c = 0; c < gs; ++c)
          e[g * gs + c] = values[c] - dequantize_value(quantize_value(values[c], p, clipped), p);
        const double loss = output_error(e, hessian, k, g * gs, (g + 1) * gs);
        if (loss < best) {
          best = loss;
          q.scales[r * G + g] = p.scale;
          q.zeros[r * G + g] = p.zero;
          for (int64_t c = 0; c < gs; ++c) q.codes[r * k + g * gs + c] = quantize_value(values[c], p, clipped);
        }
      }
    }
  return q;
}

}  // namespace kestrel::quant
