#include "engine/kv_format.h"

#include <algorithm>
#include <array>
#include <cctype>

#include "core/error.h"
#include "core/kv_codec.h"

namespace kestrel {
namespace {

struct Named {
  std::string_view name;
  DType t;
  int group;
};
constexpr std::array<Named, 11> kFormats = {{
    {"f32", DType::F32, 0},
    {"f16", DType::F16, 0},
    {"bf16", DType::BF16, 0},
    {"fp8", DType::F8E4M3, 64},
    {"int8", DType::U8, 64},
    {"int4", DType::U4, 32},
    {"q8_0", DType::Q8_0, 0},
    {"q4_0", DType::Q4_0, 0},
    {"q4_1", DType::Q4_1, 0},
    {"q5_0", DType::Q5_0, 0},
    {"q5_1", DType::Q5_1, 0},
}};

int params_of(DType t, int group) {
  if (group == 0) return 0;
  quant::KvCode c;
  KS_CHECK(quant::kv_code_of(t, &c), "{} pages have no scale groups", dtype_name(t));
  return quant::kv_params(c);
}

}  // namespace

KvFormat KvFormat::plain(DType t) {
  return {std::string(dtype_name(t)), t, t, 0};
}

bool KvFormat::quantized() const {
  return group > 0 || dtype_info(k).quantized || dtype_info(v).quantized;
}

int KvFormat::k_params() const {
  return params_of(k, group);
}
int KvFormat::v_params() const {
  return params_of(v, group);
}

size_t KvFormat::bytes_per_token_layer(int n_kv_heads, int head_dim) const {
  const int64_t row = int64_t{n_kv_heads} * head_dim, groups = group > 0 ? row / group : 0;
  return row_bytes(k, row) + row_bytes(v, row) + static_cast<size_t>(groups * (k_params() + v_params())) * 2;
}

std::optional<KvFormat> kv_format_from_name(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const Named& n : kFormats)
    if (n.name == lower) return KvFormat{lower, n.t, n.t, n.group};
  return std::nullopt;
}

std::string kv_format_names() {
  std::string s;
  for (const Named& n : kFormats) s += (s.empty() ? "" : ", ") + std::string(n.name);
  return s;
}

bool kv_format_on_cuda(const KvFormat& f) {
  auto ok = [&](DType t) {
    return t == DType::BF16 || (f.group > 0 && (t == DType::F8E4M3 || t == DType::U8 || t == DType::U4));
  };
  return ok(f.k) && ok(f.v);
}

void check_kv_format(const KvFormat& f, int head_dim) {
  for (DType t : {f.k, f.v}) {
    const int64_t block = f.group > 0 ? f.group : dtype_info(t).block_size;
    KS_CHECK(head_dim % block == 0,
             "--kv-type {} scales groups of {} elements, which do not divide this model's head size {}; use a "
             "format with smaller groups (int4, q8_0, q4_0, q4_1 take 32) or a float cache (bf16, f16, f32)",
             f.name, block, head_dim);
  }
}

}  // namespace kestrel
