// Rows of KV pages through their format: the float and ggml types by the reference row conversions
// (dequant.h), the code types (F8E4M3, U8, U4, U2) by kv_codec.h's group codec with the params beside them
// (in the layer's channel order, clip and code limit), open blocks of windowed formats as plain rows.
#include <array>
#include <vector>

#include "core/dequant.h"
#include "core/error.h"
#include "core/kv_codec.h"
#include "ops/context.h"
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

// The channel order of kv head `head` (null: in order).
const int32_t* perm_of(const KvCoding& c, int64_t head, int64_t d) {
  return c.perm.empty() ? nullptr : c.perm.ptr<int32_t>() + head * d;
}

template <quant::KvCode C>
void store_head(const CodedRow& r, const KvCoding& coding, const int32_t* perm, const float* x) {
  std::array<float, 512> buf;
  const int64_t d = r.groups * r.group;
  if (perm) {
    KS_CHECK(d <= static_cast<int64_t>(buf.size()), "head size {} too large for a reordered KV format", d);
    for (int64_t i = 0; i < d; ++i) buf[i] = x[perm[i]];
    x = buf.data();
  }
  for (int64_t g = 0; g < r.groups; ++g)
    quant::kv_encode_group<C>(x + g * r.group, static_cast<int>(r.group), r.codes + quant::kv_row_bytes(C, g * r.group),
                              r.params + g * r.n_params, coding.qmax, coding.clip);
}

template <quant::KvCode C>
void load_head(const CodedRow& r, const int32_t* perm, float* x) {
  std::array<float, 512> buf;
  float* y = perm ? buf.data() : x;
  const int64_t d = r.groups * r.group;
  KS_CHECK(!perm || d <= static_cast<int64_t>(buf.size()), "head size {} too large for a reordered KV format", d);
  for (int64_t g = 0; g < r.groups; ++g)
    for (int64_t i0 = g * r.group; i0 < (g + 1) * r.group; i0 += quant::kGroup)
      quant::kv_decode8<C>(r.codes, r.params + g * r.n_params, static_cast<int>(i0), y + i0);
  if (perm)
    for (int64_t i = 0; i < d; ++i) x[perm[i]] = y[i];
}

// The row of an open block's slot (slot - first open slot) in k_open / v_open, or -1 for a code block.
int64_t open_row(const KvLayer& c, int64_t slot) {
  const int64_t first = c.k.dim(0) * c.k.dim(1);
  return slot >= first && !c.k_open.empty() ? slot - first : -1;
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
  if (const int64_t o = open_row(c, slot); o >= 0) {
    const Tensor& open = v ? c.v_open : c.k_open;
    const size_t rb = row_bytes(open.dtype, d);
    dequantize_row(open.dtype, static_cast<const char*>(open.data) + (o * pages.dim(2) + head) * rb, x, d);
    return;
  }
  const int32_t* perm = perm_of(v ? c.v_coding : c.k_coding, head, d);
  if (quant::visit_kv_code(pages.dtype,
                           [&](auto code) { load_head<decltype(code)::value>(coded_row(c, v, slot, head), perm, x); }))
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
  if (const int64_t o = open_row(c, slot); o >= 0) {
    const Tensor& open = v ? c.v_open : c.k_open;
    const size_t rb = row_bytes(open.dtype, hkv * d);
    quantize_row(open.dtype, x, static_cast<char*>(open.data) + o * rb, hkv * d);
    return;
  }
  const KvCoding& coding = v ? c.v_coding : c.k_coding;
  if (quant::visit_kv_code(pages.dtype, [&](auto code) {
        for (int64_t h = 0; h < hkv; ++h)
          store_head<decltype(code)::value>(coded_row(c, v, slot, h), coding, perm_of(coding, h, d), x + h * d);
      }))
    return;
  const size_t rb = row_bytes(pages.dtype, hkv * d);
  quantize_row(pages.dtype, x, static_cast<char*>(pages.data) + slot * rb, hkv * d);
}

void kv_seal(const Context& ctx, const Tensor& seals, KvLayer& cache) {
  if (seals.empty() || seals.numel() == 0) return;
  KS_CHECK(ctx.device == Device::Cpu, "sealing KV blocks of a windowed format runs on the CPU only");
  KS_CHECK(seals.dtype == DType::I32 && seals.ndim() == 2 && seals.dim(1) == 2,
           "kv_seal: seals must be i32 [S, 2], got {}", seals.describe());
  const int64_t bs = cache.block_size(), nb = cache.k.dim(0), row = cache.k.dim(2) * cache.k.dim(3);
  std::vector<float> x(static_cast<size_t>(row));
  for (int64_t i = 0; i < seals.dim(0); ++i) {
    const int32_t from = seals.ptr<int32_t>()[2 * i], to = seals.ptr<int32_t>()[2 * i + 1];
    if (from < 0 || to < 0) continue;
    KS_CHECK(from >= nb && from < cache.num_blocks() && to < nb, "kv_seal: block {} -> {} is not open -> code", from,
             to);
    for (int64_t j = 0; j < bs; ++j)
      for (bool v : {false, true}) {
        kv_load(cache, v, int64_t{from} * bs + j, x.data());
        kv_store(cache, v, int64_t{to} * bs + j, x.data());
      }
  }
}

}  // namespace kestrel::ops
