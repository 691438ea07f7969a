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
  DType k, v;
  int group;
  int k_qmax = 0, v_qmax = 0;
  float clip = 1.f;
  int sinks = 0, window = 0;
  int k_token_group = 0;
};
// SKVQ's defaults (../shared/research/attention-and-kv.md): clip 0.96 (its PPL setting), 5 sink tokens and a
// 128-token window in full precision; groups of 64 fit every head size the engine runs (64, 128, 256).
constexpr float kSkvqClip = 0.96f;
constexpr int kSkvqSinks = 5, kSkvqWindow = 128;
// KIVI's defaults (Liu et al. 2024): keys per channel over groups of 32 tokens, values per token in groups of
// 32 channels, the most recent 128 tokens (its residual, a multiple of the token group) in full precision.
constexpr int kKiviTokens = 32, kKiviGroup = 32, kKiviResidual = 128;
constexpr std::array<Named, 18> kFormats = {{
    {"f32", DType::F32, DType::F32, 0},
    {"f16", DType::F16, DType::F16, 0},
    {"bf16", DType::BF16, DType::BF16, 0},
    {"fp8", DType::F8E4M3, DType::F8E4M3, 64},
    {"int8", DType::U8, DType::U8, 64},
    {"int4", DType::U4, DType::U4, 32},
    {"int2", DType::U2, DType::U2, 32},
    {"skvq-k2v1.5", DType::U2, DType::U2, 64, 0, 2, kSkvqClip, kSkvqSinks, kSkvqWindow},
    {"skvq", DType::U2, DType::U2, 64, 0, 2, kSkvqClip, kSkvqSinks, kSkvqWindow},
    {"skvq-k2v2", DType::U2, DType::U2, 64, 0, 0, kSkvqClip, kSkvqSinks, kSkvqWindow},
    {"skvq-k4v4", DType::U4, DType::U4, 32, 0, 0, kSkvqClip, kSkvqSinks, kSkvqWindow},
    {"kivi2", DType::U2, DType::U2, kKiviGroup, 0, 0, 1.f, 0, kKiviResidual, kKiviTokens},
    {"kivi4", DType::U4, DType::U4, kKiviGroup, 0, 0, 1.f, 0, kKiviResidual, kKiviTokens},
    {"q8_0", DType::Q8_0, DType::Q8_0, 0},
    {"q4_0", DType::Q4_0, DType::Q4_0, 0},
    {"q4_1", DType::Q4_1, DType::Q4_1, 0},
    {"q5_0", DType::Q5_0, DType::Q5_0, 0},
    {"q5_1", DType::Q5_1, DType::Q5_1, 0},
}};

int params_of(DType t, int group) {
  if (group == 0) return 0;
  quant::KvCode c;
  KS_CHECK(quant::kv_code_of(t, &c), "{} pages have no scale groups", dtype_name(t));
  return quant::kv_params(c);
}

}  // namespace

KvFormat KvFormat::plain(DType t) {
  KvFormat f;
  f.name = std::string(dtype_name(t));
  f.k = f.v = t;
  return f;
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
  // Per-channel keys hold a scale and min per element of a row for every k_token_group tokens: per token,
  // as many parameters as row / k_token_group groups would.
  const int64_t k_groups = k_token_group > 0 ? row / k_token_group : groups;
  return row_bytes(k, row) + row_bytes(v, row) + static_cast<size_t>(k_groups * k_params() + groups * v_params()) * 2;
}

std::optional<KvFormat> kv_format_from_name(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const Named& n : kFormats) {
    if (n.name != lower) continue;
    KvFormat f;
    f.name = lower == "skvq" ? "skvq-k2v1.5" : lower;
    f.k = n.k;
    f.v = n.v;
    f.group = n.group;
    f.k_qmax = n.k_qmax;
    f.v_qmax = n.v_qmax;
    f.k_clip = f.v_clip = n.clip;
    f.sinks = n.sinks;
    f.window = n.window;
    f.k_token_group = n.k_token_group;
    return f;
  }
  return std::nullopt;
}

std::string kv_format_names() {
  std::string s;
  for (const Named& n : kFormats) s += (s.empty() ? "" : ", ") + std::string(n.name);
  return s;
}

bool kv_format_on_cuda(const KvFormat& f) {
  auto ok = [&](DType t) {
    return t == DType::BF16 ||
           (f.group > 0 && (t == DType::F8E4M3 || t == DType::U8 || t == DType::U4 || t == DType::U2));
  };
  return ok(f.k) && ok(f.v) && !f.windowed() && f.k_token_group == 0 && f.k_qmax == 0 && f.v_qmax == 0 &&
         f.k_clip == 1.f && f.v_clip == 1.f;
}

int kv_block_size(const KvFormat& f, int requested) {
  const int g = f.k_token_group;
  return g > 0 ? (requested + g - 1) / g * g : requested;
}

void check_kv_format(const KvFormat& f, int head_dim) {
  for (DType t : {f.k, f.v}) {
    const int64_t block = f.group > 0 ? f.group : dtype_info(t).block_size;
    KS_CHECK(head_dim % block == 0,
             "--kv-type {} scales groups of {} elements, which do not divide this model's head size {}; use a "
             "format with smaller groups (int4, int2, q8_0, q4_0, q4_1 take 32) or a float cache (bf16, f16, f32)",
             f.name, block, head_dim);
  }
  KS_CHECK(!f.reorders() || head_dim <= 512, "--kv-type {} reorders channels of heads up to 512 wide, not {}", f.name,
           head_dim);
}

}  // namespace kestrel
