#include "core/linear.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <vector>

#include "core/dequant.h"
#include "core/error.h"
#include "core/half.h"
#include "core/int_codes.h"
#include "core/w8a8.h"

namespace kestrel {

std::string_view linear_role_name(LinearRole r) {
  static constexpr std::array<std::string_view, 10> kNames = {"attn_q",      "attn_k",   "attn_v", "attn_qkv",
                                                              "attn_output", "ffn_gate", "ffn_up", "ffn_gate_up",
                                                              "ffn_down",    "output"};
  return kNames.at(static_cast<size_t>(r));
}

std::string LinearId::name() const {
  return layer < 0 ? std::string(linear_role_name(role)) : fmt::format("blk.{}.{}", layer, linear_role_name(role));
}

Linear::Linear(Tensor w) : weight(std::move(w)) {
  KS_CHECK(!is_code_type(weight.dtype), "a {} matrix holds integer codes: it needs its group scales to be a weight",
           weight.describe());
}

Linear Linear::grouped(Tensor codes, IntGroups groups, LinearId id) {
  const std::string name = id.name();
  KS_CHECK(is_code_type(codes.dtype) && codes.ndim() == 2, "{}: grouped weights must be a matrix of codes, got {}",
           name, codes.describe());
  const int64_t N = codes.rows(), K = codes.cols();
  const Tensor &s = groups.scales, &z = groups.zeros, &gi = groups.g_idx;
  KS_CHECK(groups.group_size >= 1, "{}: group size {} must be positive", name, groups.group_size);
  KS_CHECK(s.dtype == DType::F16 && s.ndim() == 2 && s.rows() == N && s.cols() >= 1,
           "{}: scales must be f16 [{}, groups], got {}", name, N, s.describe());
  const int64_t G = s.cols();
  KS_CHECK(z.empty() || (z.dtype == DType::F16 && z.shape == s.shape), "{}: zero points must be f16 [{}, {}], got {}",
           name, N, G, z.describe());
  for (const Tensor* t : {&s, &z, &gi})
    KS_CHECK(t->empty() || t->device == codes.device, "{}: the group tensors must be on the codes' device", name);
  if (gi.empty()) {
    KS_CHECK(G == (K + groups.group_size - 1) / groups.group_size, "{}: {} groups of {} do not cover {} input channels",
             name, G, groups.group_size, K);
  } else {
    KS_CHECK(gi.dtype == DType::I32 && gi.ndim() == 1 && gi.numel() == K, "{}: g_idx must be i32 [{}], got {}", name, K,
             gi.describe());
    if (gi.device == Device::Cpu)
      for (int64_t k = 0; k < K; ++k) {
        const int32_t g = gi.ptr<int32_t>()[k];
        KS_CHECK(g >= 0 && g < G, "{}: g_idx[{}] = {} is outside the {} groups", name, k, g, G);
      }
  }
  Linear l;
  l.weight = std::move(codes);
  l.groups = std::move(groups);
  l.id = id;
  return l;
}

Linear Linear::scaled(Tensor codes, Tensor channel_scales, LinearId id) {
  const std::string name = id.name();
  KS_CHECK(is_w8_type(codes.dtype) && codes.ndim() == 2, "{}: W8A8 weights must be an i8 or f8_e4m3 matrix, got {}",
           name, codes.describe());
  KS_CHECK(channel_scales.dtype == DType::F32 && channel_scales.ndim() == 1 && channel_scales.numel() == codes.rows(),
           "{}: channel scales must be f32 [{}], got {}", name, codes.rows(), channel_scales.describe());
  KS_CHECK(channel_scales.device == codes.device, "{}: the channel scales must be on the codes' device", name);
  Linear l;
  l.weight = std::move(codes);
  l.channel_scales = std::move(channel_scales);
  l.id = id;
  return l;
}

int Linear::bits() const {
  if (scaled()) return 8;
  return dense() ? 0 : code_bits(weight.dtype);
}

size_t Linear::nbytes() const {
  size_t n = 0;
  for_each_tensor([&](const Tensor& t) { n += t.nbytes(); });
  return n;
}

std::string Linear::describe() const {
  if (dense()) return weight.describe();
  if (scaled()) return weight.describe() + " w8a8";
  return fmt::format("{} g{}{}{}", weight.describe(), groups.group_size, groups.zeros.empty() ? " sym" : " asym",
                     groups.g_idx.empty() ? "" : " act-order");
}

void dequantize_row(const Linear& w, int64_t n, float* out) {
  const int64_t K = w.in_features();
  if (w.dense()) return dequantize_row(w.weight.dtype, w.weight.row(n), out, K);
  if (w.scaled()) {
    const auto* c = static_cast<const uint8_t*>(w.weight.row(n));
    const bool fp8 = w.weight.dtype == DType::F8E4M3;
    const float scale = w.channel_scales.ptr<float>()[n];
    for (int64_t k = 0; k < K; ++k) out[k] = w8_value(c[k], fp8) * scale;
    return;
  }
  const int64_t G = w.n_groups();
  thread_local std::vector<uint8_t> codes;
  thread_local std::vector<float> scale, zero;
  codes.resize(static_cast<size_t>(K));
  scale.resize(static_cast<size_t>(G));
  zero.resize(static_cast<size_t>(G));
  unpack_codes(w.weight.dtype, w.weight.row(n), K, codes.data());
  const uint16_t* s = w.groups.scales.ptr<uint16_t>() + n * G;
  const uint16_t* z = w.groups.zeros.empty() ? nullptr : w.groups.zeros.ptr<uint16_t>() + n * G;
  const float mid = static_cast<float>(1 << (w.bits() - 1));
  for (int64_t g = 0; g < G; ++g) scale[g] = f16_to_f32(s[g]), zero[g] = z ? f16_to_f32(z[g]) : mid;
  if (!w.groups.g_idx.empty()) {
    const int32_t* gi = w.groups.g_idx.ptr<int32_t>();
    for (int64_t k = 0; k < K; ++k) out[k] = (static_cast<float>(codes[k]) - zero[gi[k]]) * scale[gi[k]];
    return;
  }
  const int64_t gs = w.groups.group_size;
  for (int64_t g = 0; g < G; ++g) {
    const float sg = scale[g], zg = zero[g];
    for (int64_t k = g * gs, end = std::min(K, k + gs); k < end; ++k) out[k] = (static_cast<float>(codes[k]) - zg) * sg;
  }
}

}  // namespace kestrel
