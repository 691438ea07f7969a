// Rows of KV pages through their format: the float and ggml types by the reference row conversions
// (dequant.h), the code types (F8E4M3, U8, U4, U2) by kv_codec.h's group codec with the params beside them
// (in the layer's channel order, clip and code limit), per-channel keys (KIVI) a token group at a time, open
// blocks of windowed formats as plain rows.
#include <array>
#include <map>
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

const KvCoding& coding_of(const KvLayer& c, bool v) {
  return v ? c.v_coding : c.k_coding;
}
// Whether K (V) pages are coded per channel over token groups (KIVI's keys).
bool per_channel(const KvLayer& c, bool v) {
  return coding_of(c, v).token_group > 0;
}

// Per-channel pages: the first code byte of (slot, head) and the [head_dim, 2] params of its token group.
uint8_t* channel_codes(const KvLayer& c, bool v, int64_t slot, int64_t head) {
  const Tensor& pages = v ? c.v : c.k;
  return static_cast<uint8_t*>(pages.data) + (slot * pages.dim(2) + head) * row_bytes(pages.dtype, pages.dim(3));
}
uint16_t* channel_params(const KvLayer& c, bool v, int64_t slot, int64_t head) {
  const Tensor& pages = v ? c.v : c.k;
  const int64_t tg = slot / coding_of(c, v).token_group;  // blocks hold whole token groups
  return static_cast<uint16_t*>((v ? c.v_params : c.k_params).data) + (tg * pages.dim(2) + head) * pages.dim(3) * 2;
}

template <quant::KvCode C>
void load_channels(const KvLayer& c, bool v, int64_t slot, int64_t head, float* x) {
  const uint8_t* codes = channel_codes(c, v, slot, head);
  const uint16_t* p = channel_params(c, v, slot, head);
  for (int64_t i = 0; i < (v ? c.v : c.k).dim(3); ++i)
    x[i] = quant::kv_decode<C>(codes, p + 2 * i, static_cast<int>(i));
}

// The token groups of code block `block` from its rows x [block_size, n_kv_heads * head_dim].
template <quant::KvCode C>
void store_channels(const KvLayer& c, bool v, int64_t block, const float* x) {
  const Tensor& pages = v ? c.v : c.k;
  const int64_t bs = pages.dim(1), hkv = pages.dim(2), d = pages.dim(3), row = hkv * d;
  const int64_t tg = coding_of(c, v).token_group, code_stride = hkv * row_bytes(pages.dtype, d);
  for (int64_t t0 = 0; t0 < bs; t0 += tg)
    for (int64_t h = 0; h < hkv; ++h) {
      const int64_t slot = block * bs + t0;
      quant::kv_encode_channels<C>(x + t0 * row + h * d, row, static_cast<int>(tg), static_cast<int>(d),
                                   channel_codes(c, v, slot, h), code_stride, channel_params(c, v, slot, h));
    }
}

}  // namespace

bool is_kv_page(const Tensor& pages, const Tensor& params, int token_group) {
  quant::KvCode code;
  if (token_group > 0) {
    return quant::kv_code_of(pages.dtype, &code) && code != quant::KvCode::Fp8 && params.dtype == DType::F16 &&
           params.ndim() == 5 && pages.ndim() == 4 && pages.dim(1) % token_group == 0 &&
           params.dim(0) == pages.dim(0) && params.dim(1) == pages.dim(1) / token_group &&
           params.dim(2) == pages.dim(2) && params.dim(3) == pages.dim(3) && pages.dim(3) % 4 == 0 &&
           params.dim(4) == 2;
  }
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
  if (per_channel(c, v) &&
      quant::visit_kv_code(pages.dtype, [&](auto code) { load_channels<decltype(code)::value>(c, v, slot, head, x); }))
    return;
  const int32_t* perm = perm_of(coding_of(c, v), head, d);
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
  const KvCoding& coding = coding_of(c, v);
  KS_CHECK(coding.token_group == 0,
           "kv_store: slot {} lies in a code block of per-channel {} (KIVI), whose scales span {} tokens; write "
           "the block whole (kv_store_block)",
           slot, v ? "values" : "keys", coding.token_group);
  if (quant::visit_kv_code(pages.dtype, [&](auto code) {
        for (int64_t h = 0; h < hkv; ++h)
          store_head<decltype(code)::value>(coded_row(c, v, slot, h), coding, perm_of(coding, h, d), x + h * d);
      }))
    return;
  const size_t rb = row_bytes(pages.dtype, hkv * d);
  quantize_row(pages.dtype, x, static_cast<char*>(pages.data) + slot * rb, hkv * d);
}

void kv_store_block(const KvLayer& c, bool v, int64_t block, const float* x) {
  const Tensor& pages = v ? c.v : c.k;
  const int64_t bs = pages.dim(1), row = pages.dim(2) * pages.dim(3);
  if (block < pages.dim(0) && per_channel(c, v)) {
    bool coded = false;
    quant::visit_kv_code(pages.dtype, [&](auto code) {
      if constexpr (decltype(code)::value != quant::KvCode::Fp8) {
        store_channels<decltype(code)::value>(c, v, block, x);
        coded = true;
      }
    });
    KS_CHECK(coded, "kv_store_block: per-channel pages take integer codes, not {}", dtype_name(pages.dtype));
    return;
  }
  for (int64_t j = 0; j < bs; ++j) kv_store(c, v, block * bs + j, x + j * row);
}

void kv_write_rows(const KvLayer& c, const float* k, const float* v, const int32_t* slots, int64_t begin, int64_t end) {
  const int64_t row = c.k.dim(2) * c.k.dim(3);
  const bool keys_by_block = per_channel(c, false);
  for (int64_t t = begin; t < end; ++t) {
    if (!keys_by_block || open_row(c, slots[t]) >= 0) kv_store(c, false, slots[t], k + t * row);
    kv_store(c, true, slots[t], v + t * row);
  }
}

void kv_write_key_blocks(const KvLayer& c, const float* k, const int32_t* slots, int64_t T) {
  if (!per_channel(c, false)) return;
  const int64_t bs = c.block_size(), row = c.k.dim(2) * c.k.dim(3);
  std::map<int64_t, std::vector<int64_t>> rows;  // code block -> the write's row of each of its slots (-1: none)
  for (int64_t t = 0; t < T; ++t) {
    if (open_row(c, slots[t]) >= 0) continue;
    std::vector<int64_t>& r = rows[slots[t] / bs];
    if (r.empty()) r.assign(static_cast<size_t>(bs), -1);
    r[slots[t] % bs] = t;
  }
  std::vector<float> x(static_cast<size_t>(bs * row));
  for (const auto& [block, r] : rows) {
    for (int64_t j = 0; j < bs; ++j) {
      KS_CHECK(r[j] >= 0,
               "kv_write: keys of a per-channel KV format (KIVI) fill code block {} whole, but this write lacks its "
               "row {}",
               block, j);
      std::copy_n(k + r[j] * row, row, x.data() + j * row);
    }
    kv_store_block(c, false, block, x.data());
  }
}

void kv_seal(const Context& ctx, const Tensor& seals, KvLayer& cache) {
  if (seals.empty() || seals.numel() == 0) return;
  KS_CHECK(ctx.device == Device::Cpu, "sealing KV blocks of a windowed format runs on the CPU only");
  KS_CHECK(seals.dtype == DType::I32 && seals.ndim() == 2 && seals.dim(1) == 2,
           "kv_seal: seals must be i32 [S, 2], got {}", seals.describe());
  const int64_t bs = cache.block_size(), nb = cache.k.dim(0), row = cache.k.dim(2) * cache.k.dim(3);
  std::vector<float> x(static_cast<size_t>(bs * row));
  for (int64_t i = 0; i < seals.dim(0); ++i) {
    const int32_t from = seals.ptr<int32_t>()[2 * i], to = seals.ptr<int32_t>()[2 * i + 1];
    if (from < 0 || to < 0) continue;
    KS_CHECK(from >= nb && from < cache.num_blocks() && to < nb, "kv_seal: block {} -> {} is not open -> code", from,
             to);
    for (bool v : {false, true}) {
      for (int64_t j = 0; j < bs; ++j) kv_load(cache, v, int64_t{from} * bs + j, x.data() + j * row);
      kv_store_block(cache, v, to, x.data());
    }
  }
}

}  // namespace kestrel::ops
