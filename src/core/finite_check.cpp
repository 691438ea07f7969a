#include "core/finite_check.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/quant_blocks.h"
#include "core/thread_pool.h"

namespace kestrel {
namespace {

constexpr uint32_t kF32Exponent = 0x7f800000u;
constexpr uint16_t kF16Exponent = 0x7c00u;
constexpr uint16_t kBf16Exponent = 0x7f80u;

// Through memcpy: tensor data in a safetensors file need not be aligned to its element size.
template <typename U>
U load(const unsigned char* p) {
  U u;
  std::memcpy(&u, p, sizeof(U));
  return u;
}

// Elements whose exponent bits are all set (infinity or NaN).
template <typename U, U kExponent>
int64_t scan_floats(const unsigned char* p, int64_t begin, int64_t end) {
  // One branch per step, and a count rather than a flag: GCC vectorises an integer sum (in lanes as wide as
  // the elements: a step's count fits U), not a bool OR.
  constexpr int64_t kStep = 4096;
  for (int64_t b = begin; b < end; b += kStep) {
    const int64_t e = std::min(end, b + kStep);
    U bad = 0;
    for (int64_t i = b; i < e; ++i) bad += (load<U>(p + i * sizeof(U)) & kExponent) == kExponent;
    if (bad == 0) continue;
    for (int64_t i = b; i < e; ++i)
      if ((load<U>(p + i * sizeof(U)) & kExponent) == kExponent) return i;
  }
  return -1;
}

// Where a block type keeps its scales: up to two f16 fields, or one f32 (Q8_K).
struct BlockScales {
  int n_f16;
  size_t f16[2];
  bool has_f32;
  size_t f32;
};

BlockScales block_scales(DType t) {
  using namespace quant;
  switch (t) {
    case DType::Q4_0: return {1, {offsetof(BlockQ4_0, d)}, false, 0};
    case DType::Q4_1: return {2, {offsetof(BlockQ4_1, d), offsetof(BlockQ4_1, m)}, false, 0};
    case DType::Q8_0: return {1, {offsetof(BlockQ8_0, d)}, false, 0};
    case DType::Q8_1: return {2, {offsetof(BlockQ8_1, d), offsetof(BlockQ8_1, s)}, false, 0};
    case DType::Q4_K: return {2, {offsetof(BlockQ4_K, d), offsetof(BlockQ4_K, dmin)}, false, 0};
    case DType::Q6_K: return {1, {offsetof(BlockQ6_K, d)}, false, 0};
    case DType::Q8_K: return {0, {}, true, offsetof(BlockQ8_K, d)};
    case DType::Q5_0: return {1, {offsetof(BlockQ5_0, d)}, false, 0};
    case DType::Q5_1: return {2, {offsetof(BlockQ5_1, d), offsetof(BlockQ5_1, m)}, false, 0};
    case DType::Q2_K: return {2, {offsetof(BlockQ2_K, d), offsetof(BlockQ2_K, dmin)}, false, 0};
    case DType::Q3_K: return {1, {offsetof(BlockQ3_K, d)}, false, 0};
    case DType::Q5_K: return {2, {offsetof(BlockQ5_K, d), offsetof(BlockQ5_K, dmin)}, false, 0};
    default: KS_FAIL("finite check: no block layout for {}", dtype_name(t));
  }
}

int64_t scan_blocks(DType t, const unsigned char* p, int64_t begin, int64_t end) {
  const DTypeInfo& info = dtype_info(t);
  const BlockScales s = block_scales(t);
  for (int64_t b = begin / info.block_size; b < end / info.block_size; ++b) {
    const unsigned char* blk = p + b * info.block_bytes;
    bool bad = s.has_f32 && (load<uint32_t>(blk + s.f32) & kF32Exponent) == kF32Exponent;
    for (int i = 0; i < s.n_f16; ++i) bad |= (load<uint16_t>(blk + s.f16[i]) & kF16Exponent) == kF16Exponent;
    if (bad) return b * info.block_size;
  }
  return -1;
}

}  // namespace

int64_t find_non_finite(DType t, const void* data, int64_t begin, int64_t end) {
  const auto* p = static_cast<const unsigned char*>(data);
  switch (t) {
    case DType::F32: return scan_floats<uint32_t, kF32Exponent>(p, begin, end);
    case DType::F16: return scan_floats<uint16_t, kF16Exponent>(p, begin, end);
    case DType::BF16: return scan_floats<uint16_t, kBf16Exponent>(p, begin, end);
    case DType::I32:
    case DType::I8: return -1;
    default: return scan_blocks(t, p, begin, end);
  }
}

std::optional<NonFinite> find_non_finite(std::span<const Tensor* const> tensors, ThreadPool& pool) {
  struct Piece {
    size_t tensor;
    int64_t begin, end;
  };
  // Equal-sized pieces, so the pool's equal split of the list is an equal split of the bytes.
  constexpr size_t kPieceBytes = size_t{1} << 20;
  std::vector<Piece> pieces;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = *tensors[i];
    KS_CHECK(t.device == Device::Cpu, "finite check: {} is not in host memory", t.describe());
    const DTypeInfo& info = dtype_info(t.dtype);
    const int64_t step = static_cast<int64_t>(std::max<size_t>(1, kPieceBytes / info.block_bytes)) * info.block_size;
    for (int64_t b = 0; b < t.numel(); b += step) pieces.push_back({i, b, std::min(t.numel(), b + step)});
  }
  std::vector<int64_t> hits(pieces.size(), -1);
  pool.parallel_for(static_cast<int64_t>(pieces.size()), [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const Piece& p = pieces[k];
      hits[k] = find_non_finite(tensors[p.tensor]->dtype, tensors[p.tensor]->data, p.begin, p.end);
    }
  });
  for (size_t k = 0; k < pieces.size(); ++k)
    if (hits[k] >= 0) return NonFinite{pieces[k].tensor, hits[k]};
  return std::nullopt;
}

}  // namespace kestrel
