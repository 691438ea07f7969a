#include "core/gptq.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/thread_pool.h"

namespace kestrel::quant {
namespace {

// In place: the lower Cholesky factor L of the symmetric positive definite a [k, k] (a = L L^T); the
// strict upper triangle is zeroed. Throws when a is not positive definite.
void cholesky_lower(std::vector<double>& a, int64_t k) {
  for (int64_t j = 0; j < k; ++j) {
    double d = a[j * k + j];
    for (int64_t p = 0; p < j; ++p) d -= a[j * k + p] * a[j * k + p];
    KS_CHECK(d > 0, "GPTQ: the damped Hessian is not positive definite (pivot {} is {}); raise the damping", j, d);
    const double ljj = std::sqrt(d);
    a[j * k + j] = ljj;
    for (int64_t i = j + 1; i < k; ++i) {
      double s = a[i * k + j];
      for (int64_t p = 0; p < j; ++p) s -= a[i * k + p] * a[j * k + p];
      a[i * k + j] = s / ljj;
    }
    for (int64_t i = 0; i < j; ++i) a[i * k + j] = 0;
  }
}

// The upper Cholesky factor U of H^-1 (H^-1 = U^T U), from H: GPTQ's row i of U holds how column i's
// error is spread over the later columns (U_ij / U_ii) and U_ii scales the error itself.
std::vector<double> inverse_hessian_factor(std::vector<double> h, int64_t k) {
  cholesky_lower(h, k);  // H = L L^T
  // M = L^-1 by forward substitution a row at a time: row i is -(sum over p < i of L_ip M_p) / L_ii, the rows
  // M_p already known, so the sums run over contiguous rows (each entry still adds its terms in order of p).
  std::vector<double> m(static_cast<size_t>(k * k), 0.0);
  for (int64_t i = 0; i < k; ++i) {
    double* mi = m.data() + i * k;
    for (int64_t p = 0; p < i; ++p) {
      const double lip = h[i * k + p];
      const double* mp = m.data() + p * k;
      for (int64_t c = 0; c <= p; ++c) mi[c] += lip * mp[c];
    }
    const double lii = h[i * k + i];
    for (int64_t c = 0; c < i; ++c) mi[c] = -mi[c] / lii;
    mi[i] = 1.0 / lii;
  }
  // H^-1 = M^T M: entry (i, j) is the dot product of M's columns i and j, rows of M^T (h is free now).
  std::vector<double>& mt = h;
  for (int64_t i = 0; i < k; ++i)
    for (int64_t p = 0; p < k; ++p) mt[i * k + p] = m[p * k + i];
  std::vector<double>& hinv = m;
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = i; j < k; ++j) {
      const double *a = mt.data() + i * k, *b = mt.data() + j * k;
      double s = 0;
      for (int64_t p = j; p < k; ++p) s += a[p] * b[p];
      hinv[i * k + j] = s;
    }
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = i + 1; j < k; ++j) hinv[j * k + i] = hinv[i * k + j];
  // The upper factor U of H^-1 = U^T U is the transpose of its lower Cholesky factor.
  cholesky_lower(hinv, k);
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = i + 1; j < k; ++j) hinv[i * k + j] = hinv[j * k + i], hinv[j * k + i] = 0;
  return std::move(hinv);
}

}  // namespace

void accumulate_hessian(std::span<double> hessian, std::span<const float> x, int64_t t, int64_t k) {
  KS_CHECK(static_cast<int64_t>(hessian.size()) == k * k && static_cast<int64_t>(x.size()) == t * k,
           "accumulate_hessian: expected a {}x{} Hessian and {}x{} inputs", k, k, t, k);
  // Rows of H on the thread pool, and x in chunks of rows so that a row of H stays in cache while a chunk's
  // rows are added to it. Each element still sums the inputs in order, so the result does not depend on the
  // number of threads.
  constexpr int64_t kChunk = 64;
  ThreadPool::global().parallel_for(
      k,
      [&](int64_t i0, int64_t i1) {
        for (int64_t r0 = 0; r0 < t; r0 += kChunk) {
          const int64_t r1 = std::min(t, r0 + kChunk);
          for (int64_t i = i0; i < i1; ++i) {
            double* hi = hessian.data() + i * k;
            for (int64_t r = r0; r < r1; ++r) {
              const float* xr = x.data() + r * k;
              const double xi = xr[i];
              if (xi == 0) continue;
              for (int64_t j = 0; j < k; ++j) hi[j] += xi * xr[j];
            }
          }
        }
      },
      16);
}

IntQuantized quantize_gptq(std::span<const float> w_in, int64_t n, int64_t k, std::span<const double> hessian,
                           const IntQuantSpec& spec, const GptqOptions& opt) {
  check_int_quant_spec(spec, k);
  KS_CHECK(static_cast<int64_t>(w_in.size()) == n * k && static_cast<int64_t>(hessian.size()) == k * k,
           "quantize_gptq: expected {}x{} weights and a {}x{} Hessian", n, k, k, k);
  KS_CHECK(opt.damp >= 0 && opt.block > 0, "quantize_gptq: damping must be >= 0 and the block > 0");
  // Work in the column order the columns are quantized in (act order: decreasing H_ii).
  std::vector<int64_t> perm(static_cast<size_t>(k));
  std::iota(perm.begin(), perm.end(), 0);
  if (opt.act_order)
    std::stable_sort(perm.begin(), perm.end(),
                     [&](int64_t a, int64_t b) { return hessian[a * k + a] > hessian[b * k + b]; });
  std::vector<double> h(static_cast<size_t>(k * k));
  std::vector<double> w(static_cast<size_t>(n * k));
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) h[i * k + j] = hessian[perm[i] * k + perm[j]];
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c) w[r * k + c] = w_in[r * k + perm[c]];
  double mean_diag = 0;
  for (int64_t i = 0; i < k; ++i) {
    if (h[i * k + i] == 0) {  // an input never seen: nothing to preserve, quantize it as zero
      h[i * k + i] = 1;
      for (int64_t r = 0; r < n; ++r) w[r * k + i] = 0;
    }
    mean_diag += h[i * k + i] / static_cast<double>(k);
  }
  for (int64_t i = 0; i < k; ++i) h[i * k + i] += opt.damp * mean_diag;
  const std::vector<double> u = inverse_hessian_factor(std::move(h), k);

  IntQuantized q{n, k, spec, std::vector<uint8_t>(static_cast<size_t>(n * k)), {}, {}, {}};
  const int64_t gs = q.group_size(), G = q.groups();
  q.scales.resize(static_cast<size_t>(n * G));
  q.zeros.resize(static_cast<size_t>(n * G));
  const int64_t block = (std::max<int64_t>(opt.block, 1) + gs - 1) / gs * gs;  // whole groups per block
  std::vector<float> values(static_cast<size_t>(gs));
  std::vector<double> err(static_cast<size_t>(n * block));  // the block's scaled errors, [n, block]
  for (int64_t b0 = 0; b0 < k; b0 += block) {
    const int64_t b1 = std::min(k, b0 + block);
    for (int64_t c = b0; c < b1; ++c) {
      if ((c - b0) % gs == 0)  // a group starts: its params from the columns as the errors left them
        for (int64_t r = 0; r < n; ++r) {
          for (int64_t x = 0; x < gs; ++x) values[x] = static_cast<float>(w[r * k + c + x]);
          const GroupParams p = group_params(values, spec);
          q.scales[r * G + c / gs] = p.scale;
          q.zeros[r * G + c / gs] = p.zero;
        }
      const double d = u[c * k + c];
      for (int64_t r = 0; r < n; ++r) {
        const GroupParams p{q.scales[r * G + c / gs], q.zeros[r * G + c / gs]};
        const uint8_t code = quantize_value(static_cast<float>(w[r * k + c]), p, spec);
        q.codes[r * k + c] = code;  // in the working order; permuted back below
        const double e = (w[r * k + c] - dequantize_value(code, p)) / d;
        err[r * block + (c - b0)] = e;
        // The error spreads over the block's later columns now, over the later blocks below.
        for (int64_t j = c + 1; j < b1; ++j) w[r * k + j] -= e * u[c * k + j];
      }
    }
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = b0; c < b1; ++c) {
        const double e = err[r * block + (c - b0)];
        if (e == 0) continue;
        const double* uc = u.data() + c * k;
        double* wr = w.data() + r * k;
        for (int64_t j = b1; j < k; ++j) wr[j] -= e * uc[j];
      }
  }
  if (opt.act_order) {  // codes back to the input order; each input keeps the group it was quantized in
    std::vector<uint8_t> codes(q.codes.size());
    q.g_idx.assign(static_cast<size_t>(k), 0);
    for (int64_t c = 0; c < k; ++c) {
      q.g_idx[perm[c]] = static_cast<int32_t>(c / gs);
      for (int64_t r = 0; r < n; ++r) codes[r * k + perm[c]] = q.codes[r * k + c];
    }
    q.codes = std::move(codes);
  }
  return q;
}

}  // namespace kestrel::quant
