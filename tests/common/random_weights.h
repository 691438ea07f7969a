// Random weight tensors of every type the engine reads, for kernel and loader tests: quantized from
// Gaussian floats where core has a quantizer, and for the K-quants (which have none: models never need
// one) random bytes with small finite super-block scales — every bit pattern of the packed fields is a
// valid block, so this covers all quant/scale combinations.
#pragma once

#include <algorithm>
#include <random>
#include <vector>

#include "core/dequant.h"
#include "core/error.h"
#include "core/half.h"
#include "core/int_codes.h"
#include "core/linear.h"
#include "core/quant_blocks.h"
#include "core/tensor.h"

namespace kestrel::testing {

// Every weight type the engine reads.
inline constexpr DType kWeightTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q4_0, DType::Q4_1,
                                         DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q2_K, DType::Q3_K,
                                         DType::Q4_K, DType::Q5_K, DType::Q6_K};

inline bool is_kquant(DType t) {
  return t == DType::Q2_K || t == DType::Q3_K || t == DType::Q4_K || t == DType::Q5_K || t == DType::Q6_K;
}

// `blocks` K-quant blocks of type t at data. The super-block scale d is drawn so that d times the largest
// (scale x quant) product of the type stays near `magnitude`.
inline void random_kquant_blocks(DType t, void* data, int64_t blocks, std::mt19937& rng, float magnitude = 1.f) {
  auto* bytes = static_cast<uint8_t*>(data);
  for (size_t i = 0; i < static_cast<size_t>(blocks) * dtype_info(t).block_bytes; ++i)
    bytes[i] = static_cast<uint8_t>(rng());
  std::uniform_real_distribution<float> u(0.1f, 1.f);
  auto d = [&](float largest_product) { return f32_to_f16(magnitude * u(rng) / largest_product); };
  using namespace quant;
  for (int64_t b = 0; b < blocks; ++b) switch (t) {
      case DType::Q2_K: {
        auto& q = static_cast<BlockQ2_K*>(data)[b];
        q.d = d(15 * 3), q.dmin = d(15);
        break;
      }
      case DType::Q3_K: static_cast<BlockQ3_K*>(data)[b].d = d(32 * 4); break;
      case DType::Q4_K: {
        auto& q = static_cast<BlockQ4_K*>(data)[b];
        q.d = d(63 * 15), q.dmin = d(63);
        break;
      }
      case DType::Q5_K: {
        auto& q = static_cast<BlockQ5_K*>(data)[b];
        q.d = d(63 * 31), q.dmin = d(63);
        break;
      }
      case DType::Q6_K: static_cast<BlockQ6_K*>(data)[b].d = d(128 * 32); break;
      default: KS_FAIL("{} is not a K-quant", dtype_name(t));
    }
}

// A tensor of `shape` (last dimension whole blocks) of type t with values of roughly `scale`.
inline Tensor random_weights(DType t, std::vector<int64_t> shape, std::mt19937& rng, float scale = 1.f) {
  Tensor w = Tensor::empty_host(t, shape);
  if (is_kquant(t)) {
    random_kquant_blocks(t, w.data, w.numel() / dtype_info(t).block_size, rng, scale);
    return w;
  }
  std::normal_distribution<float> n(0.f, scale);
  std::vector<float> row(static_cast<size_t>(w.cols()));
  for (int64_t r = 0; r < w.rows(); ++r) {
    for (float& v : row) v = n(rng);
    quantize_row(t, row.data(), w.row(r), w.cols());
  }
  return w;
}

// A grouped integer linear [n, k] of `codes` (U2, U3, U4, U8) in groups of `group` input channels (the last
// may be partial): uniform codes, f16 scales of magnitude `scale` / 2^(b-1), zero points anywhere in [0, 2^b]
// when `asym` (2^b too: GPTQ's stored-minus-one zeros reach it) or none, and with `act_order` a g_idx that
// deals every group its channels in shuffled order (as GPTQ's act-order does).
inline Linear random_grouped(DType codes, int64_t n, int64_t k, int64_t group, bool asym, bool act_order,
                             std::mt19937& rng, float scale = 1.f) {
  const int bits = code_bits(codes);
  const int64_t G = (k + group - 1) / group;
  Tensor w = Tensor::empty_host(codes, {n, k});
  std::uniform_int_distribution<int> code(0, (1 << bits) - 1), zero(0, 1 << bits);
  std::uniform_real_distribution<float> mag(0.5f, 1.f);
  std::vector<uint8_t> row(static_cast<size_t>(k));
  for (int64_t r = 0; r < n; ++r) {
    for (uint8_t& c : row) c = static_cast<uint8_t>(code(rng));
    pack_codes(codes, row.data(), k, w.row(r));
  }
  IntGroups g;
  g.group_size = group;
  g.scales = Tensor::empty_host(DType::F16, {n, G});
  for (int64_t i = 0; i < n * G; ++i)
    g.scales.ptr<uint16_t>()[i] = f32_to_f16(scale * mag(rng) / static_cast<float>(1 << (bits - 1)));
  if (asym) {
    g.zeros = Tensor::empty_host(DType::F16, {n, G});
    for (int64_t i = 0; i < n * G; ++i) g.zeros.ptr<uint16_t>()[i] = f32_to_f16(static_cast<float>(zero(rng)));
  }
  if (act_order) {
    std::vector<int32_t> perm(static_cast<size_t>(k));
    for (int64_t i = 0; i < k; ++i) perm[i] = static_cast<int32_t>(i);
    std::shuffle(perm.begin(), perm.end(), rng);
    g.g_idx = Tensor::empty_host(DType::I32, {k});
    for (int64_t i = 0; i < k; ++i) g.g_idx.ptr<int32_t>()[perm[i]] = static_cast<int32_t>(i / group);
  }
  return Linear::grouped(std::move(w), std::move(g));
}

}  // namespace kestrel::testing
