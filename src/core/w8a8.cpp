#include "core/w8a8.h"

#include <cmath>
#include <vector>

#include "core/dequant.h"
#include "core/error.h"

namespace kestrel {

float w8_quantize_row(const float* x, int64_t K, bool fp8, uint8_t* codes) {
  float absmax = 0.f;
  for (int64_t k = 0; k < K; ++k) absmax = std::fmax(absmax, std::fabs(x[k]));
  const float inv = w8_inv_scale(absmax, fp8);
  for (int64_t k = 0; k < K; ++k) codes[k] = w8_code(x[k], inv, fp8);
  return absmax / w8_qmax(fp8);
}

W8Matrix quantize_w8_rows(const Tensor& w, DType t) {
  KS_CHECK(is_w8_type(t), "W8A8 weights are i8 or f8_e4m3, not {}", dtype_name(t));
  KS_CHECK(w.ndim() == 2 && w.device == Device::Cpu, "W8A8 quantization takes a host matrix, got {}", w.describe());
  const int64_t N = w.rows(), K = w.cols();
  W8Matrix m{Tensor::empty_host(t, {N, K}), Tensor::empty_host(DType::F32, {N})};
  std::vector<float> row(static_cast<size_t>(K));
  for (int64_t n = 0; n < N; ++n) {
    dequantize_row(w.dtype, w.row(n), row.data(), K);
    m.scales.ptr<float>()[n] =
        w8_quantize_row(row.data(), K, t == DType::F8E4M3, static_cast<uint8_t*>(m.codes.row(n)));
  }
  return m;
}

float w8_fake_quantize_row(const float* x, int64_t K, bool fp8, float* out) {
  thread_local std::vector<uint8_t> codes;
  codes.resize(static_cast<size_t>(K));
  const float scale = w8_quantize_row(x, K, fp8, codes.data());
  for (int64_t k = 0; k < K; ++k) out[k] = w8_value(codes[k], fp8) * scale;
  return scale;
}

}  // namespace kestrel
