#include "engine/kv_format.h"

#include <algorithm>
#include <array>
#include <cctype>

#include "core/error.h"

namespace kestrel {
namespace {

struct Named {
  std::string_view name;
  DType t;
};
constexpr std::array<Named, 11> kFormats = {{
    {"f32", DType::F32},
    {"f16", DType::F16},
    {"bf16", DType::BF16},
    {"fp8", DType::KV_FP8},
    {"int8", DType::KV_INT8},
    {"int4", DType::Q4_1},
    {"q8_0", DType::Q8_0},
    {"q4_0", DType::Q4_0},
    {"q4_1", DType::Q4_1},
    {"q5_0", DType::Q5_0},
    {"q5_1", DType::Q5_1},
}};

}  // namespace

KvFormat KvFormat::plain(DType t) {
  return {std::string(dtype_name(t)), t, t};
}

bool KvFormat::quantized() const {
  return dtype_info(k).quantized || dtype_info(v).quantized;
}

size_t KvFormat::bytes_per_token_layer(int n_kv_heads, int head_dim) const {
  const int64_t row = int64_t{n_kv_heads} * head_dim;
  return row_bytes(k, row) + row_bytes(v, row);
}

std::optional<KvFormat> kv_format_from_name(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const Named& n : kFormats)
    if (n.name == lower) return KvFormat{lower, n.t, n.t};
  return std::nullopt;
}

std::string kv_format_names() {
  std::string s;
  for (const Named& n : kFormats) s += (s.empty() ? "" : ", ") + std::string(n.name);
  return s;
}

bool kv_format_on_cuda(const KvFormat& f) {
  auto ok = [](DType t) { return t == DType::BF16 || t == DType::KV_FP8 || t == DType::KV_INT8 || t == DType::Q4_1; };
  return ok(f.k) && ok(f.v);
}

void check_kv_format(const KvFormat& f, int head_dim) {
  for (DType t : {f.k, f.v}) {
    const int64_t block = dtype_info(t).block_size;
    KS_CHECK(head_dim % block == 0,
             "--kv-type {} stores {} elements per block, which does not divide this model's head size {}; "
             "use a format with smaller blocks (q8_0, q4_0, q4_1 take 32) or a float cache (bf16, f16, f32)",
             f.name, block, head_dim);
  }
}

}  // namespace kestrel
