// Group-quantized integer weights (core/int_quant.h) and the algorithms that choose their codes: round to
// nearest, GPTQ (core/gptq.h) and AWQ (core/awq.h), on small matrices with inputs built to have the
// structure each method exploits.
#include "core/int_quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>

#include "core/awq.h"
#include "core/error.h"
#include "core/gptq.h"

namespace kestrel::quant {
namespace {

std::vector<float> randn(size_t count, std::mt19937& rng, float sd = 1.f) {
  std::normal_distribution<float> nd(0.f, sd);
  std::vector<float> v(count);
  for (float& x : v) x = nd(rng);
  return v;
}

// Calibration inputs whose channels are correlated (x = z A, A random): what makes GPTQ's error
// feedback pay, since an error in one column can be compensated in the columns it correlates with.
std::vector<float> correlated_inputs(int64_t t, int64_t k, std::mt19937& rng) {
  const auto z = randn(static_cast<size_t>(t * k), rng), a = randn(static_cast<size_t>(k * k), rng, 0.3f);
  std::vector<float> x(static_cast<size_t>(t * k), 0.f);
  for (int64_t r = 0; r < t; ++r)
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < k; ++j) x[r * k + j] += z[r * k + i] * (a[i * k + j] + (i == j ? 1.f : 0.f));
  return x;
}

std::vector<double> hessian_of(const std::vector<float>& x, int64_t t, int64_t k) {
  std::vector<double> h(static_cast<size_t>(k * k), 0.0);
  accumulate_hessian(h, x, t, k);
  return h;
}

TEST(IntQuant, RoundToNearestStaysWithinHalfAStepAndReencodesExactly) {
  std::mt19937 rng(1);
  const int64_t n = 8, k = 128;
  const auto w = randn(static_cast<size_t>(n * k), rng);
  for (int bits : {2, 3, 4, 8})
    for (bool sym : {false, true})
      for (int group : {32, 64, -1}) {
        const IntQuantSpec spec{bits, group, sym};
        const IntQuantized q = quantize_rtn(w, n, k, spec);
        const auto dq = q.dequantize();
        ASSERT_EQ(q.groups(), group > 0 ? k / group : 1);
        for (int64_t r = 0; r < n; ++r)
          for (int64_t c = 0; c < k; ++c) {
            const int64_t g = q.group_of(c);
            const GroupParams p{q.scales[r * q.groups() + g], q.zeros[r * q.groups() + g]};
            ASSERT_LE(q.codes[r * k + c], spec.max_code());
            // Between the end codes the error is at most half a step. At the ends it can reach a whole step
            // (the zero point is an integer, so the grid is shifted by up to half a step) plus the f16
            // rounding of the scale times the code range (2^-11 * 255 < 0.125 steps at 8 bits);
            // symmetric groups clip their top code as GPTQ's quantizer does.
            const float err = std::fabs(w[r * k + c] - dq[r * k + c]);
            const int code = q.codes[r * k + c];
            if (code > 0 && code < spec.max_code())
              EXPECT_LE(err, 0.5f * p.scale * 1.0001f);
            else if (!sym)
              EXPECT_LE(err, 1.125f * p.scale);
            // The dequantized value re-encodes to its own code.
            EXPECT_EQ(quantize_value(dq[r * k + c], p, spec), q.codes[r * k + c]);
          }
      }
}

TEST(IntQuant, BadSpecsAreRefusedByName) {
  std::vector<float> w(64, 1.f);
  EXPECT_THROW(quantize_rtn(w, 1, 64, {5, 32, false}), Error);
  EXPECT_THROW(quantize_rtn(w, 1, 64, {4, 48, false}), Error);
  EXPECT_THROW(quantize_rtn(w, 2, 64, {4, 32, false}), Error);  // 64 weights are not 2x64
  try {
    quantize_rtn(w, 1, 64, {4, 48, false});
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("group 48"), std::string::npos) << e.what();
  }
}

TEST(Gptq, WithUncorrelatedInputsItIsRoundToNearest) {
  // H = c I: no column's error can be compensated elsewhere, so GPTQ must round every weight to nearest.
  std::mt19937 rng(2);
  const int64_t n = 16, k = 64;
  const auto w = randn(static_cast<size_t>(n * k), rng);
  std::vector<double> h(static_cast<size_t>(k * k), 0.0);
  for (int64_t i = 0; i < k; ++i) h[i * k + i] = 3.0;
  for (const IntQuantSpec spec : {IntQuantSpec{4, 32, false}, IntQuantSpec{3, -1, true}}) {
    const IntQuantized g = quantize_gptq(w, n, k, h, spec), r = quantize_rtn(w, n, k, spec);
    EXPECT_EQ(g.codes, r.codes);
    EXPECT_EQ(g.scales, r.scales);
    EXPECT_EQ(g.zeros, r.zeros);
  }
}

TEST(Gptq, BeatsRoundToNearestOnCorrelatedInputs) {
  std::mt19937 rng(3);
  const int64_t n = 32, k = 64, t = 512;
  const auto w = randn(static_cast<size_t>(n * k), rng);
  const auto x = correlated_inputs(t, k, rng);
  const auto h = hessian_of(x, t, k);
  for (int bits : {2, 3, 4}) {
    const IntQuantSpec spec{bits, 32, false};
    const double rtn = proxy_loss(w, quantize_rtn(w, n, k, spec), h);
    const double gptq = proxy_loss(w, quantize_gptq(w, n, k, h, spec), h);
    GptqOptions act;
    act.act_order = true;
    act.block = 32;
    const IntQuantized qa = quantize_gptq(w, n, k, h, spec, act);
    const double gptq_act = proxy_loss(w, qa, h);
    EXPECT_LT(gptq, 0.8 * rtn) << bits << " bits";
    EXPECT_LT(gptq_act, 0.8 * rtn) << bits << " bits, act order";
    // Act order: every group holds exactly `group` inputs, and the codes read through g_idx are the ones
    // the loss above was computed from.
    ASSERT_EQ(static_cast<int64_t>(qa.g_idx.size()), k);
    std::vector<int> members(static_cast<size_t>(qa.groups()), 0);
    for (int32_t g : qa.g_idx) ++members.at(g);
    for (int m : members) EXPECT_EQ(m, 32);
  }
}

TEST(Gptq, InputsNeverSeenQuantizeToZero) {
  std::mt19937 rng(4);
  const int64_t n = 4, k = 32, t = 64;
  const auto w = randn(static_cast<size_t>(n * k), rng);
  auto x = correlated_inputs(t, k, rng);
  for (int64_t r = 0; r < t; ++r) x[r * k + 5] = 0.f;
  const auto dq = quantize_gptq(w, n, k, hessian_of(x, t, k), {4, 32, false}).dequantize();
  for (int64_t r = 0; r < n; ++r) EXPECT_EQ(dq[r * k + 5], 0.f);
}

TEST(Awq, ScalingProtectsSalientChannels) {
  // A few input channels carry activations 30x the others (as in LLMs): scaling their weights up before
  // rounding cuts the output error, and clipping each group's range cuts it further.
  std::mt19937 rng(5);
  const int64_t n = 48, k = 64, t = 256;
  auto x = randn(static_cast<size_t>(t * k), rng);
  for (int64_t r = 0; r < t; ++r)
    for (int64_t c : {3, 17, 40}) x[r * k + c] *= 30.f;
  const auto h = hessian_of(x, t, k);
  std::vector<float> mean_abs(static_cast<size_t>(k), 0.f);
  for (int64_t r = 0; r < t; ++r)
    for (int64_t c = 0; c < k; ++c) mean_abs[c] += std::fabs(x[r * k + c]) / static_cast<float>(t);
  const auto w1 = randn(static_cast<size_t>(n * k), rng), w2 = randn(static_cast<size_t>(n * k), rng);
  const std::vector<AwqLinear> linears = {{w1, n}, {w2, n}};
  const IntQuantSpec spec{3, 32, false};
  const AwqScales s = awq_search_scales(linears, k, mean_abs, h, spec);
  EXPECT_GT(s.alpha, 0.f);
  EXPECT_LT(s.loss, 0.9 * s.loss_unscaled);
  ASSERT_EQ(static_cast<int64_t>(s.s.size()), k);

  // The scaled weights, quantized with and without the clip search, judged in the scaled inputs' terms.
  std::vector<float> ws(w1.size());
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c) ws[r * k + c] = w1[r * k + c] * s.s[c];
  std::vector<double> hs(h.size());
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) hs[i * k + j] = h[i * k + j] / (s.s[i] * s.s[j]);
  const double rtn = proxy_loss(ws, quantize_rtn(ws, n, k, spec), hs);
  const double clipped = proxy_loss(ws, awq_quantize(ws, n, k, hs, spec), hs);
  AwqOptions no_clip;
  no_clip.clip_search = false;
  EXPECT_EQ(proxy_loss(ws, awq_quantize(ws, n, k, hs, spec, no_clip), hs), rtn);
  EXPECT_LT(clipped, rtn);
}

}  // namespace
}  // namespace kestrel::quant
