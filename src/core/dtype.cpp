#include "core/dtype.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <string>

#include "core/error.h"

namespace kestrel {
namespace {

constexpr size_t kQK_K = 256;

constexpr std::array<DTypeInfo, static_cast<size_t>(DType::Count)> kInfo = {{
    {"f32", 1, 4, false},
    {"f16", 1, 2, false},
    {"bf16", 1, 2, false},
    {"i32", 1, 4, false},
    {"i8", 1, 1, false},
    {"q4_0", 32, 2 + 16, true},
    {"q4_1", 32, 2 + 2 + 16, true},
    {"q8_0", 32, 2 + 32, true},
    {"q8_1", 32, 2 + 2 + 32, true},
    {"q4_k", kQK_K, 2 + 2 + 12 + kQK_K / 2, true},
    {"q6_k", kQK_K, kQK_K / 2 + kQK_K / 4 + kQK_K / 16 + 2, true},
    {"q8_k", kQK_K, 4 + kQK_K + kQK_K / 16 * 2, true},
    {"q5_0", 32, 2 + 4 + 16, true},
    {"q5_1", 32, 2 + 2 + 4 + 16, true},
    {"q2_k", kQK_K, kQK_K / 16 + kQK_K / 4 + 2 + 2, true},
    {"q3_k", kQK_K, kQK_K / 8 + kQK_K / 4 + 12 + 2, true},
    {"q5_k", kQK_K, 2 + 2 + 12 + kQK_K / 8 + kQK_K / 2, true},
    {"f8_e4m3", 1, 1, false},
    {"u8", 1, 1, false},
    {"u4", 2, 1, false},
    {"u2", 4, 1, false},
    {"u3", 8, 3, false},
}};

struct GgmlId {
  uint32_t id;
  DType t;
};
constexpr GgmlId kGgml[] = {
    {0, DType::F32},   {1, DType::F16},   {2, DType::Q4_0},  {3, DType::Q4_1},  {6, DType::Q5_0},  {7, DType::Q5_1},
    {8, DType::Q8_0},  {9, DType::Q8_1},  {10, DType::Q2_K}, {11, DType::Q3_K}, {12, DType::Q4_K}, {13, DType::Q5_K},
    {14, DType::Q6_K}, {15, DType::Q8_K}, {24, DType::I8},   {26, DType::I32},  {30, DType::BF16},
};

}  // namespace

const DTypeInfo& dtype_info(DType t) {
  auto i = static_cast<size_t>(t);
  KS_CHECK(i < kInfo.size(), "invalid dtype id {}", i);
  return kInfo[i];
}

std::optional<DType> dtype_from_name(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  for (size_t i = 0; i < kInfo.size(); ++i)
    if (kInfo[i].name == lower) return static_cast<DType>(i);
  return std::nullopt;
}

size_t row_bytes(DType t, int64_t n) {
  const auto& info = dtype_info(t);
  KS_CHECK(n >= 0 && n % info.block_size == 0, "row of {} elements is not a multiple of the {} block size {}", n,
           info.name, info.block_size);
  return static_cast<size_t>(n / info.block_size) * info.block_bytes;
}

std::optional<DType> dtype_from_ggml(uint32_t ggml_type) {
  for (const auto& g : kGgml)
    if (g.id == ggml_type) return g.t;
  return std::nullopt;
}

uint32_t dtype_to_ggml(DType t) {
  for (const auto& g : kGgml)
    if (g.t == t) return g.id;
  KS_FAIL("dtype {} has no GGUF type id", dtype_name(t));
}

}  // namespace kestrel
