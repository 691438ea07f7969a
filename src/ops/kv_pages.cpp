// Rows of KV pages through their format: the float and ggml types by the reference row conversions
// (dequant.h), the code types (F8E4M3, U8, U4) by kv_codec.h's group codec with the params beside them.
#include <vector>

#include "core/dequant.h"
#include "core/error.h"
#include "core/kv_codec.h"
#include "ops/ops.h"

namespace kestrel::ops {
namespace {

// A head row of a code page: its codes and f16 params at (slot, head).
struct CodedRow {
  uint8_t* codes;
  uint16_t* params;
  int64_t groups, group, n_params;
};

CodedRow coded_row(const KvLayer& c, bool v, int64_t slot, int64_t head) {
  const Tensor& pages = v ? c.v : c.k;
  const Tensor& params = v ? c.v_params : c.k_params;
  const int64_t hkv = pages.dim(2), d = pages.dim(3), groups = params.dim(3), np = params.dim(4);
  auto* codes = static_cast<uint8_t*>(pages.data) + (slot * hkv + head) * row_bytes(pages.dtype, d);
  auto* p = static_cast<uint16_t*>(params.data) + (slot * hkv + head) * groups * np;
  return {codes, p, groups, d / groups, np};
}

template <quant::KvCode C>
void store_head(const CodedRow& r, const float* x) {
  for (int64_t g = 0; g < r.groups; ++g)
    quant::kv_encode_group<C>(x + g * r.group, static_cast<int>(r.group), r.codes + quant::kv_row_bytes(C, g * r.group),
                              r.params + g * r.n_params);
}

template <quant::KvCode C>
void load_head(const CodedRow& r, float* x) {
  for (int64_t g = 0; g < r.groups; ++g)
    for (int64_t i0 = g * r.group; i0 < (g + 1) * r.group; i0 += quant::kGroup)
      quant::kv_decode8<C>(r.codes, r.params + g * r.n_params, static_cast<int>(i0), x + i0);
}

}  // namespace

bool is_kv_page(const Tensor& pages, const Tensor& params) {
  quant::KvCode code;
  if (quant::kv_code_of(pages.dtype, &code)) {
    return params.dtype == DType::F16 && params.ndim() == 5 && pages.ndim() == 4 && params.dim(0) == pages.dim(0) &&
           params.dim(1) == pages.dim(1) && params.dim(2) == pages.dim(2) && params.dim(3) > 0 &&
           pages.dim(3) % params.dim(3) == 0 && (pages.dim(3) / params.dim(3)) % 8 == 0 &&
           params.dim(4) == quant::kv_params(code);
  }
  if (!params.empty()) return false;
  switch (pages.dtype) {
    case DType::F32:
    case DType::F16:
    case DType::BF16:
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q5_0:
    case DType::Q5_1: return true;
    default: return false;
  }
}

void kv_load_head(const KvLayer& c, bool v, int64_t slot, int64_t head, float* x) {
  const Tensor& pages = v ? c.v : c.k;
  const int64_t d = pages.dim(3);
  if (quant::visit_kv_code(pages.dtype,
                           [&](auto code) { load_head<decltype(code)::value>(coded_row(c, v, slot, head), x); }))
    return;
  const size_t rb = row_bytes(pages.dtype, d);
  dequantize_row(pages.dtype, static_cast<const char*>(pages.data) + (slot * pages.dim(2) + head) * rb, x, d);
}

void kv_load(const KvLayer& c, bool v, int64_t slot, float* x) {
  const Tensor& pages = v ? c.v : c.k;
  for (int64_t h = 0; h < pages.dim(2); ++h) kv_load_head(c, v, slot, h, x + h * pages.dim(3));
}

void kv_store(const KvLayer& c, bool v, int64_t slot, const float* x) {
  const Tensor& pages = v ? c.v : c.k;
  const int64_t hkv = pages.dim(2), d = pages.dim(3);
  if (quant::visit_kv_code(pages.dtype, [&](auto code) {
        for (int64_t h = 0; h < hkv; ++h) store_head<decltype(code)::value>(coded_row(c, v, slot, h), x + h * d);
      }))
    return;
  const size_t rb = row_bytes(pages.dtype, hkv * d);
  quantize_row(pages.dtype, x, static_cast<char*>(pages.data) + slot * rb, hkv * d);
}

}  // namespace kestrel::ops
