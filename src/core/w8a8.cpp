#include "core/w8a8.h"

#include <cmath>
#include <vector>

#include "core/dequant.h"
#include "core/error.h"

namespace kestrel {

W8Matrix quantize_w8_rows(const Tensor& w, DType t) {
  KS_CHECK(is_w8_type(t), "W8A8 weights are i8 or f8_e4m3, not {}", dtype_name(t));
  KS_CHECK(w.ndim() == 2 && w.device == Device::Cpu, "W8A8 quantization takes a host matrix, got {}", w.describe());
  const int64_t N = w.rows(), K = w.cols();
  const bool fp8 = t == DType::F8E4M3;
  W8Matrix m{Tensor::empty_host(t, {N, K}), Tensor::empty_host(DType::F32, {N})};
  std::vector<float> row(static_cast<size_t>(K));
  for (int64_t n = 0; n < N; ++n) {
    dequantize_row(w.dtype, w.row(n), row.data(), K);
    float absmax = 0.f;
    for (float v : row) absmax = std::fmax(absmax, std::fabs(v));
    const float inv = w8_inv_scale(absmax, fp8);
    auto* codes = static_cast<uint8_t*>(m.codes.row(n));
    for (int64_t k = 0; k < K; ++k) codes[k] = w8_code(row[k], inv, fp8);
    m.scales.ptr<float>()[n] = absmax / w8_qmax(fp8);
  }
  return m;
}

float w8_fake_quantize_row(const float* x, int64_t K, bool fp8, float* out) {
  float absmax = 0.f;
  for (int64_t k = 0; k < K; ++k) absmax = std::fmax(absmax, std::fabs(x[k]));
  const float inv = w8_inv_scale(absmax, fp8), scale = absmax / w8_qmax(fp8);
  for (int64_t k = 0; k < K; ++k) out[k] = w8_value(w8_code(x[k], inv, fp8), fp8) * scale;
  return scale;
}

}  // namespace kestrel
