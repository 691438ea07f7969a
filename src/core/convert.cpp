#include "core/convert.h"

#include <array>
#include <cstring>
#include <memory>
#include <vector>

#include "core/dequant.h"
#include "core/half.h"

namespace kestrel {
namespace {

// f16 -> bf16 by lookup: 128 KiB that stay in cache, exact by construction (every entry is the reference
// f16 -> f32 -> bf16 round trip), and fast without F16C.
const uint16_t* f16_to_bf16_table() {
  static const auto table = [] {
    auto t = std::make_unique<std::array<uint16_t, 65536>>();
    for (uint32_t h = 0; h < t->size(); ++h) (*t)[h] = f32_to_bf16(f16_to_f32(static_cast<uint16_t>(h)));
    return t;
  }();
  return table->data();
}

void f16_rows_to_bf16(const uint16_t* src, uint16_t* dst, int64_t n) {
  const uint16_t* table = f16_to_bf16_table();
  for (int64_t i = 0; i < n; ++i) dst[i] = table[src[i]];
}

void f32_rows_to_bf16(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}

}  // namespace

void convert_rows(DType from, const void* src, DType to, void* dst, int64_t rows, int64_t cols) {
  const size_t in_row = row_bytes(from, cols), out_row = row_bytes(to, cols);
  const int64_t n = rows * cols;
  if (from == to) {
    std::memcpy(dst, src, rows * in_row);
  } else if (from == DType::F16 && to == DType::BF16) {
    f16_rows_to_bf16(static_cast<const uint16_t*>(src), static_cast<uint16_t*>(dst), n);
  } else if (from == DType::F32 && to == DType::BF16) {
    f32_rows_to_bf16(static_cast<const float*>(src), static_cast<uint16_t*>(dst), n);
  } else if (to == DType::F32) {
    for (int64_t r = 0; r < rows; ++r)
      dequantize_row(from, static_cast<const char*>(src) + r * in_row, static_cast<float*>(dst) + r * cols, cols);
  } else {  // through one f32 row at a time, as the reference does
    std::vector<float> row(cols);
    for (int64_t r = 0; r < rows; ++r) {
      dequantize_row(from, static_cast<const char*>(src) + r * in_row, row.data(), cols);
      quantize_row(to, row.data(), static_cast<char*>(dst) + r * out_row, cols);
    }
  }
}

}  // namespace kestrel
