#include "core/awq.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/thread_pool.h"

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

// The sum over the rows of e [n, k] of e_r^T H e_r: as output_error row by row, each row's terms added in the
// same order, but four rows at a time so that they share the loads of H (e is padded to whole fours).
double rows_output_error(std::span<const double> e, int64_t n, std::span<const double> hessian, int64_t k) {
  constexpr int kRows = 4;
  double total = 0;
  for (int64_t r0 = 0; r0 < n; r0 += kRows) {
    const double* er = e.data() + r0 * k;
    double loss[kRows] = {};
    for (int64_t i = 0; i < k; ++i) {
      const double* hi = hessian.data() + i * k;
      // Four named sums rather than an array, which the compiler keeps in memory.
      double h0 = 0, h1 = 0, h2 = 0, h3 = 0;
      for (int64_t j = 0; j < k; ++j) {
        h0 += hi[j] * er[j];
        h1 += hi[j] * er[k + j];
        h2 += hi[j] * er[2 * k + j];
        h3 += hi[j] * er[3 * k + j];
      }
      const double he[kRows] = {h0, h1, h2, h3};
      for (int r = 0; r < kRows; ++r)
        if (er[r * k + i] != 0) loss[r] += er[r * k + i] * he[r];
    }
    for (int r = 0; r < kRows && r0 + r < n; ++r) total += loss[r];
  }
  return total;
}

// Output error of round to nearest of w * s (then divided by s again), summed over the rows: the error
// in the original units, since (w - Q(w s) / s) x = (w s - Q(w s)) (x / s).
double scaled_rtn_error(const AwqLinear& l, int64_t k, std::span<const float> s, std::span<const double> hessian,
                        const IntQuantSpec& spec) {
  std::vector<float> ws(l.w.size());
  for (int64_t r = 0; r < l.n; ++r)
    for (int64_t c = 0; c < k; ++c) ws[r * k + c] = l.w[r * k + c] * s[c];
  const std::vector<float> dq = quantize_rtn(ws, l.n, k, spec).dequantize();
  std::vector<double> e(static_cast<size_t>((l.n + 3) / 4 * 4 * k), 0.0);
  for (int64_t r = 0; r < l.n; ++r)
    for (int64_t c = 0; c < k; ++c) e[r * k + c] = static_cast<double>(l.w[r * k + c]) - dq[r * k + c] / s[c];
  return rows_output_error(e, l.n, hessian, k);
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
  // The grid points are independent: evaluated on the thread pool, then compared in order.
  std::vector<std::vector<float>> scales(static_cast<size_t>(opt.grid), std::vector<float>(static_cast<size_t>(k)));
  std::vector<double> losses(static_cast<size_t>(opt.grid));
  ThreadPool::global().parallel_for(opt.grid, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const float alpha = static_cast<float>(g) / static_cast<float>(opt.grid);
      std::vector<float>& s = scales[g];
      // s = mean|x|^alpha, normalized so that sqrt(max * min) = 1 (AWQ's normalization keeps the weights'
      // overall scale; channels never seen get the smallest seen scale rather than 0).
      float lo = std::numeric_limits<float>::infinity(), hi = 0;
      for (int64_t c = 0; c < k; ++c) {
        s[c] = mean_abs_x[c] > 0 ? std::pow(mean_abs_x[c], alpha) : 0.f;
        if (s[c] > 0) lo = std::min(lo, s[c]), hi = std::max(hi, s[c]);
      }
      const float norm = hi > 0 ? std::sqrt(lo * hi) : 1.f;
      for (int64_t c = 0; c < k; ++c) s[c] = (s[c] > 0 ? s[c] : lo) / norm;
      for (const AwqLinear& l : linears) losses[g] += scaled_rtn_error(l, k, s, hessian, spec);
    }
  });
  AwqScales best;
  best.loss = std::numeric_limits<double>::infinity();
  best.loss_unscaled = losses[0];
  for (int g = 0; g < opt.grid; ++g)
    if (losses[g] < best.loss)
      best.loss = losses[g], best.alpha = static_cast<float>(g) / static_cast<float>(opt.grid), best.s = scales[g];
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
