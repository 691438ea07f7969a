#include "core/int_quant.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/half.h"
#include "core/int_codes.h"

namespace kestrel::quant {

void check_int_quant_spec(const IntQuantSpec& spec, int64_t k) {
  KS_CHECK(spec.bits == 2 || spec.bits == 3 || spec.bits == 4 || spec.bits == 8, "bits must be 2, 3, 4 or 8, got {}",
           spec.bits);
  KS_CHECK(spec.group <= 0 || k % spec.group == 0, "group {} does not divide the {} inputs of the matrix", spec.group,
           k);
  KS_CHECK(spec.clip > 0.f && spec.clip <= 1.f, "clip ratio must be in (0, 1], got {}", spec.clip);
}

GroupParams group_params(std::span<const float> values, const IntQuantSpec& spec) {
  float lo = 0.f, hi = 0.f;
  for (float v : values) lo = std::min(lo, v), hi = std::max(hi, v);
  const float maxq = static_cast<float>(spec.max_code());
  if (spec.sym) hi = std::max(-lo, hi), lo = -hi;
  lo *= spec.clip, hi *= spec.clip;
  // An all-zero group still needs a usable scale; f16 keeps what the checkpoint will store.
  const float scale = f16_to_f32(f32_to_f16(hi > lo ? (hi - lo) / maxq : 1.f));
  const float zero = spec.sym ? static_cast<float>(1 << (spec.bits - 1)) : std::nearbyint(-lo / scale);
  return {scale, static_cast<uint8_t>(std::clamp(zero, 0.f, maxq))};
}

uint8_t quantize_value(float x, GroupParams p, const IntQuantSpec& spec) {
  const float q = std::nearbyint(x / p.scale) + static_cast<float>(p.zero);
  return static_cast<uint8_t>(std::clamp(q, 0.f, static_cast<float>(spec.max_code())));
}

std::vector<float> IntQuantized::dequantize() const {
  std::vector<float> w(static_cast<size_t>(n * k));
  const int64_t G = groups();
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c) {
      const int64_t g = group_of(c);
      w[r * k + c] = dequantize_value(codes[r * k + c], {scales[r * G + g], zeros[r * G + g]});
    }
  return w;
}

Linear to_linear(const IntQuantized& q, LinearId id) {
  const int64_t G = q.groups();
  Tensor codes = Tensor::empty_host(*code_type(q.spec.bits), {q.n, q.k});
  for (int64_t r = 0; r < q.n; ++r) pack_codes(codes.dtype, q.codes.data() + r * q.k, q.k, codes.row(r));
  IntGroups g;
  g.group_size = q.group_size();
  g.scales = Tensor::empty_host(DType::F16, {q.n, G});
  if (!q.spec.sym) g.zeros = Tensor::empty_host(DType::F16, {q.n, G});
  for (int64_t i = 0; i < q.n * G; ++i) {
    g.scales.ptr<uint16_t>()[i] = f32_to_f16(q.scales[i]);
    if (!q.spec.sym) g.zeros.ptr<uint16_t>()[i] = f32_to_f16(static_cast<float>(q.zeros[i]));
  }
  if (!q.g_idx.empty()) {
    g.g_idx = Tensor::empty_host(DType::I32, {q.k});
    std::copy(q.g_idx.begin(), q.g_idx.end(), g.g_idx.ptr<int32_t>());
  }
  return Linear::grouped(std::move(codes), std::move(g), id);
}

IntQuantized quantize_rtn(std::span<const float> w, int64_t n, int64_t k, const IntQuantSpec& spec) {
  check_int_quant_spec(spec, k);
  KS_CHECK(static_cast<int64_t>(w.size()) == n * k, "quantize_rtn: {} weights for a {}x{} matrix", w.size(), n, k);
  IntQuantized q{n, k, spec, std::vector<uint8_t>(w.size()), {}, {}, {}};
  const int64_t gs = q.group_size(), G = q.groups();
  q.scales.resize(static_cast<size_t>(n * G));
  q.zeros.resize(static_cast<size_t>(n * G));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t g = 0; g < G; ++g) {
      const auto values = w.subspan(r * k + g * gs, gs);
      const GroupParams p = group_params(values, spec);
      q.scales[r * G + g] = p.scale;
      q.zeros[r * G + g] = p.zero;
      for (int64_t c = 0; c < gs; ++c) q.codes[r * k + g * gs + c] = quantize_value(values[c], p, spec);
    }
  return q;
}

double proxy_loss(std::span<const float> w, const IntQuantized& q, std::span<const double> hessian) {
  const int64_t n = q.n, k = q.k;
  KS_CHECK(static_cast<int64_t>(hessian.size()) == k * k, "proxy_loss: the Hessian must be {}x{}", k, k);
  const std::vector<float> dq = q.dequantize();
  double loss = 0;
  std::vector<double> e(static_cast<size_t>(k));
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) e[c] = static_cast<double>(w[r * k + c]) - dq[r * k + c];
    for (int64_t i = 0; i < k; ++i) {
      double he = 0;
      for (int64_t j = 0; j < k; ++j) he += hessian[i * k + j] * e[j];
      loss += e[i] * he;
    }
  }
  return loss;
}

}  // namespace kestrel::quant
