#include "model/hf_quant.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "core/int_codes.h"
#include "core/thread_pool.h"
#include "formats/hf_config.h"
#include "formats/safetensors.h"

namespace kestrel {
namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// An integer field under either of two names (AutoAWQ's early configs say w_bit and q_group_size).
const nlohmann::json* field_of(const nlohmann::json& q, const char* name, const char* alias) {
  const nlohmann::json* v = json_field(q, name);
  return v ? v : json_field(q, alias);
}

void read_gptq_fields(const nlohmann::json& q, HfQuantization& h, const std::string& where) {
  KS_CHECK(h.bits == 2 || h.bits == 3 || h.bits == 4 || h.bits == 8, "{}: GPTQ 'bits' {} is not supported (2, 3, 4, 8)",
           where, h.bits);
  // GPTQModel writes checkpoint_format (or, from 4.x, format); AutoGPTQ's checkpoints predate both: "gptq".
  const char* key = json_field(q, "checkpoint_format") ? "checkpoint_format" : "format";
  const std::string format = lower(json_field_or<std::string>(q, key, "gptq", where));
  KS_CHECK(format == "gptq" || format == "gptq_v2",
           "{}: '{}' is '{}'; only the gptq (zero points stored minus one) and gptq_v2 (stored as they are) "
           "layouts load, not a kernel's repacked one",
           where, key, format);
  h.zero_offset = format == "gptq" ? 1 : 0;
  KS_CHECK(!json_field_or<bool>(q, "is_marlin_format", false, where),
           "{}: 'is_marlin_format' is true: Marlin's repacked layout does not load (only gptq and gptq_v2)", where);
  const std::string pack = lower(json_field_or<std::string>(q, "pack_dtype", "int32", where));
  KS_CHECK(pack == "int32", "{}: 'pack_dtype' is '{}'; only codes packed in int32 words load", where, pack);
  if (const nlohmann::json* d = json_field(q, "dynamic"))
    KS_CHECK(d->is_object() && d->empty(), "{}: 'dynamic' (per-module bits and group sizes) is not supported", where);
  h.sym = json_field_or<bool>(q, "sym", true, where);
  h.desc_act = json_field_or<bool>(q, "desc_act", false, where);
}

void read_awq_fields(const nlohmann::json& q, HfQuantization& h, const std::string& where) {
  KS_CHECK(h.bits == 4, "{}: AWQ 'bits' {} is not supported (4)", where, h.bits);
  const std::string version = lower(json_field_or<std::string>(q, "version", "gemm", where));
  KS_CHECK(version == "gemm", "{}: AWQ 'version' is '{}'; only the GEMM layout loads (not gemv, gemv_fast, marlin ...)",
           where, version);
  KS_CHECK(json_field_or<bool>(q, "zero_point", true, where),
           "{}: AWQ 'zero_point' is false; only AWQ's asymmetric weights (with qzeros) load", where);
}

// A part of a quantized linear, checked for type and (when given) shape; any 2-D shape otherwise.
Tensor part(const SafetensorsModel& st, const std::string& prefix, const char* suffix, DType dtype,
            std::vector<int64_t> shape = {}) {
  const std::string name = prefix + "." + suffix;
  KS_CHECK(st.has(name), "quantized linear '{}' has no '{}' in '{}'", prefix, name, st.path());
  Tensor t = st.tensor(name);
  const bool ok = t.dtype == dtype && (shape.empty() ? t.ndim() == 2 : t.shape == shape);
  KS_CHECK(ok, "tensor '{}' is {}, expected {}[{}]", name, t.describe(), dtype_name(dtype),
           shape.empty() ? std::string("rows, columns") : fmt::format("{}", fmt::join(shape, ", ")));
  return t;
}

// Code i of a bit stream of b-bit codes in little-endian 32-bit words that lie `stride` words apart (GPTQ
// packs each column of qweight along K: one column's words are a row of N words apart).
uint32_t stream_code(const int32_t* words, int64_t stride, int bits, int64_t i) {
  const int64_t bit = i * bits;
  const int shift = static_cast<int>(bit & 31);
  uint64_t v = static_cast<uint32_t>(words[(bit >> 5) * stride]) >> shift;
  if (shift + bits > 32) v |= uint64_t{static_cast<uint32_t>(words[((bit >> 5) + 1) * stride])} << (32 - shift);
  return static_cast<uint32_t>(v) & ((1u << bits) - 1);
}

// AWQ (GEMM) packs eight 4-bit codes of adjacent output channels per word in the order 0, 2, 4, 6, 1, 3, 5, 7
// (nibble i holds channel 8c + that list's i-th entry): channel 8c + j is in nibble kAwqNibble[j].
constexpr int kAwqNibble[8] = {0, 4, 1, 5, 2, 6, 3, 7};
uint32_t awq_code(const int32_t* row, int64_t n) {
  return (static_cast<uint32_t>(row[n / 8]) >> (4 * kAwqNibble[n % 8])) & 15;
}

// Codes [N, K] of type t from code_at(n, k), in tiles of output channels (adjacent channels share the cache
// lines of the packed words) spread over the thread pool.
template <class CodeAt>
Tensor repack_codes(DType t, int64_t N, int64_t K, const CodeAt& code_at) {
  Tensor out = Tensor::empty_host(t, {N, K});
  constexpr int64_t kTile = 16;
  ThreadPool::global().parallel_for((N + kTile - 1) / kTile, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> codes(static_cast<size_t>(kTile * K));
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t n0 = tile * kTile, n1 = std::min(N, n0 + kTile);
      for (int64_t k = 0; k < K; ++k)
        for (int64_t n = n0; n < n1; ++n) codes[(n - n0) * K + k] = static_cast<uint8_t>(code_at(n, k));
      for (int64_t n = n0; n < n1; ++n) pack_codes(t, codes.data() + (n - n0) * K, K, out.row(n));
    }
  });
  return out;
}

// The file's per-group scales [G, N] and zero points zero_at(g, n) (offset by the convention) as the
// format's [N, G]; with `sym` checked to be the symmetric zero point and left out.
template <class ZeroAt>
IntGroups groups_of(const Tensor& scales, const ZeroAt& zero_at, int64_t group_size, const HfQuantization& q,
                    const std::string& prefix) {
  const int64_t G = scales.rows(), N = scales.cols();
  IntGroups g;
  g.group_size = group_size;
  g.scales = Tensor::empty_host(DType::F16, {N, G});
  const auto* s = scales.ptr<uint16_t>();
  for (int64_t j = 0; j < G; ++j)
    for (int64_t n = 0; n < N; ++n) g.scales.ptr<uint16_t>()[n * G + j] = s[j * N + n];
  const int64_t mid = int64_t{1} << (q.bits - 1);
  if (!q.sym) g.zeros = Tensor::empty_host(DType::F16, {N, G});
  for (int64_t j = 0; j < G; ++j)
    for (int64_t n = 0; n < N; ++n) {
      const int64_t z = int64_t{zero_at(j, n)} + q.zero_offset;
      KS_CHECK(!q.sym || z == mid,
               "quantization_config says sym, but '{}.qzeros' holds zero point {} at group {} of output channel {} "
               "(symmetric {}-bit weights have {})",
               prefix, z, j, n, q.bits, mid);
      if (!q.sym) g.zeros.ptr<uint16_t>()[n * G + j] = f32_to_f16(static_cast<float>(z));
    }
  return g;
}

Linear gptq_linear(const SafetensorsModel& st, const std::string& prefix, const HfQuantization& q) {
  const int b = q.bits;
  const Tensor qweight = part(st, prefix, "qweight", DType::I32);
  KS_CHECK(qweight.rows() * 32 % b == 0,
           "tensor '{}.qweight' has {} rows: {}-bit codes fill whole int32 words in "
           "groups of {} rows",
           prefix, qweight.rows(), b, b);
  const int64_t K = qweight.rows() * 32 / b, N = qweight.cols();
  const int64_t gs = q.group_size < 0 ? K : q.group_size, G = (K + gs - 1) / gs;
  const Tensor scales = part(st, prefix, "scales", DType::F16, {G, N});
  const Tensor qzeros = part(st, prefix, "qzeros", DType::I32, {G, (N * b + 31) / 32});
  Tensor g_idx;
  if (st.has(prefix + ".g_idx")) g_idx = part(st, prefix, "g_idx", DType::I32, {K});
  KS_CHECK(!q.desc_act || !g_idx.empty(), "quantization_config says desc_act, but '{}' has no '{}.g_idx'", st.path(),
           prefix);
  const auto* qw = qweight.ptr<int32_t>();
  Tensor codes = repack_codes(*code_type(b), N, K, [&](int64_t n, int64_t k) { return stream_code(qw + n, N, b, k); });
  const auto* qz = qzeros.ptr<int32_t>();
  const int64_t zcols = qzeros.cols();
  IntGroups groups = groups_of(
      scales, [&](int64_t g, int64_t n) { return stream_code(qz + g * zcols, 1, b, n); }, gs, q, prefix);
  // Checkpoints without act-order store the plain k / group_size too: only a real reordering is kept.
  bool ordered = true;
  for (int64_t k = 0; k < g_idx.numel(); ++k) {
    const int32_t g = g_idx.ptr<int32_t>()[k];
    KS_CHECK(g >= 0 && g < G, "tensor '{}.g_idx' names group {} for input channel {} of {} groups", prefix, g, k, G);
    ordered = ordered && g == k / gs;
  }
  if (!ordered) groups.g_idx = g_idx;
  return Linear::grouped(std::move(codes), std::move(groups));
}

Linear awq_linear(const SafetensorsModel& st, const std::string& prefix, const HfQuantization& q) {
  const Tensor qweight = part(st, prefix, "qweight", DType::I32);
  const int64_t K = qweight.rows(), N = qweight.cols() * 8;
  const int64_t gs = q.group_size < 0 ? K : q.group_size, G = (K + gs - 1) / gs;
  KS_CHECK(K % 2 == 0, "tensor '{}.qweight' has {} input channels: 4-bit codes are stored in pairs", prefix, K);
  const Tensor scales = part(st, prefix, "scales", DType::F16, {G, N});
  const Tensor qzeros = part(st, prefix, "qzeros", DType::I32, {G, N / 8});
  const auto* qw = qweight.ptr<int32_t>();
  Tensor codes = repack_codes(DType::U4, N, K, [&](int64_t n, int64_t k) { return awq_code(qw + k * (N / 8), n); });
  const auto* qz = qzeros.ptr<int32_t>();
  IntGroups groups = groups_of(
      scales, [&](int64_t g, int64_t n) { return awq_code(qz + g * (N / 8), n); }, gs, q, prefix);
  return Linear::grouped(std::move(codes), std::move(groups));
}

}  // namespace

std::string HfQuantization::describe() const {
  return fmt::format(
      "{} {}-bit, {}, {}{}", method == Method::Gptq ? "GPTQ" : "AWQ", bits,
      group_size < 0 ? std::string("one group per output channel") : fmt::format("groups of {}", group_size),
      sym ? "symmetric" : "asymmetric", zero_offset ? " (zero points stored minus one)" : "");
}

std::optional<HfQuantization> hf_quantization(const nlohmann::json& config, const std::string& dir) {
  const nlohmann::json* q = json_field(config, "quantization_config");
  std::string where = dir + "/config.json: quantization_config";
  nlohmann::json separate;
  if (!q) {
    // AutoGPTQ wrote its settings beside the model (they had no quant_method: GPTQ was the only one).
    const std::string path = dir + "/quantize_config.json";
    if (!std::filesystem::exists(path)) return std::nullopt;
    separate = load_json_file(path);
    q = &separate;
    where = path;
  }
  KS_CHECK(q->is_object(), "{} is not a JSON object", where);
  const std::string method = lower(json_field_or<std::string>(*q, "quant_method", q == &separate ? "gptq" : "", where));
  KS_CHECK(method == "gptq" || method == "awq", "{}: 'quant_method' '{}' is not supported (gptq, awq)", where, method);
  HfQuantization h;
  h.method = method == "gptq" ? HfQuantization::Method::Gptq : HfQuantization::Method::Awq;
  const nlohmann::json* bits = field_of(*q, "bits", "w_bit");
  KS_CHECK(bits, "{}: no 'bits'", where);
  h.bits = static_cast<int>(json_int(*bits, "bits", where, 1, 64));
  const nlohmann::json* group = field_of(*q, "group_size", "q_group_size");
  KS_CHECK(group, "{}: no 'group_size'", where);
  h.group_size = json_int(*group, "group_size", where, -1, std::numeric_limits<int32_t>::max());
  KS_CHECK(h.group_size != 0, "{}: 'group_size' must be positive or -1 (one group per output channel)", where);
  if (h.method == HfQuantization::Method::Gptq)
    read_gptq_fields(*q, h, where);
  else
    read_awq_fields(*q, h, where);
  return h;
}

Linear read_quantized_linear(const SafetensorsModel& st, const std::string& prefix, const HfQuantization& q) {
  return q.method == HfQuantization::Method::Gptq ? gptq_linear(st, prefix, q) : awq_linear(st, prefix, q);
}

}  // namespace kestrel
