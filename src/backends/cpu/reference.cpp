#include "backends/cpu/reference.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/dequant.h"
#include "core/error.h"
#include "core/half.h"
#include "core/int_codes.h"
#include "core/w8a8.h"

namespace kestrel::backends::cpu {
namespace {

using namespace ops;

bool all_f32(std::initializer_list<const Tensor*> ts, std::string* why) {
  for (const Tensor* t : ts)
    if (t->dtype != DType::F32) {
      if (why) *why = "reference kernels take f32 activations, got " + t->describe();
      return false;
    }
  return true;
}

void ref_embed(const EmbedArgs& a, const Context&) {
  const int64_t n = a.ids.numel(), d = a.table.cols(), vocab = a.table.rows();
  for (int64_t t = 0; t < n; ++t) {
    const int32_t id = a.ids.ptr<int32_t>()[t];
    KS_CHECK(id >= 0 && id < vocab, "token id {} outside the vocabulary of {}", id, vocab);
    float* out = a.out.ptr<float>() + t * d;
    dequantize_row(a.table.dtype, a.table.row(id), out, d);
    for (int64_t i = 0; i < d; ++i) out[i] *= a.scale;
  }
}

void ref_scatter_rows(const ScatterRowsArgs& a, const Context&) {
  const int64_t n = a.rows.numel(), t = a.dst.rows();
  for (int64_t i = 0; i < n; ++i) {
    const int32_t r = a.rows.ptr<int32_t>()[i];
    KS_CHECK(r >= 0 && r < t, "scatter_rows: row {} outside the {} rows of the output", r, t);
    std::memcpy(a.dst.row(r), a.src.row(i), a.dst.row_nbytes());
  }
}

// Row n of a weight as its format defines it (core/linear.h). Grouped formats are decoded element by
// element here, apart from core's row decoder (dequantize_row of a Linear) that the fast kernels use, so
// the ops harness compares two readings of the format.
void ref_weight_row(const Linear& w, int64_t n, float* out) {
  const int64_t K = w.in_features();
  if (w.dense()) return dequantize_row(w.weight.dtype, w.weight.row(n), out, K);
  const int bits = w.bits();
  const int64_t G = w.n_groups();
  const auto* codes = static_cast<const uint8_t*>(w.weight.row(n));
  for (int64_t k = 0; k < K; ++k) {
    const int64_t g = w.groups.g_idx.empty() ? k / w.groups.group_size : w.groups.g_idx.ptr<int32_t>()[k];
    const float zero = w.groups.zeros.empty() ? static_cast<float>(1 << (bits - 1))
                                              : f16_to_f32(w.groups.zeros.ptr<uint16_t>()[n * G + g]);
    const float scale = f16_to_f32(w.groups.scales.ptr<uint16_t>()[n * G + g]);
    out[k] = (static_cast<float>(code_at(codes, bits, k)) - zero) * scale;
  }
}

// W8A8 as core/linear.h defines it: each row of x quantized to the weight's type, the codes' products
// summed exactly (double), then both scales.
void ref_matmul_w8a8(const MatmulArgs& a) {
  const int64_t m = a.x.rows(), k = a.x.cols(), n = a.w.out_features();
  const bool fp8 = a.w.weight.dtype == DType::F8E4M3;
  std::vector<double> xv(k);
  for (int64_t i = 0; i < m; ++i) {
    const float* x = a.x.ptr<float>() + i * k;
    float absmax = 0.f;
    for (int64_t l = 0; l < k; ++l) absmax = std::fmax(absmax, std::fabs(x[l]));
    const float inv = w8_inv_scale(absmax, fp8), x_scale = absmax / w8_qmax(fp8);
    for (int64_t l = 0; l < k; ++l) xv[l] = w8_value(w8_code(x[l], inv, fp8), fp8);
    for (int64_t j = 0; j < n; ++j) {
      const auto* wc = static_cast<const uint8_t*>(a.w.weight.row(j));
      double acc = 0;
      for (int64_t l = 0; l < k; ++l) acc += xv[l] * w8_value(wc[l], fp8);
      acc *= static_cast<double>(x_scale) * a.w.channel_scales.ptr<float>()[j];
      if (a.bias) acc += a.bias->ptr<float>()[j];
      a.y.ptr<float>()[i * n + j] = static_cast<float>(acc);
    }
  }
}

void ref_matmul(const MatmulArgs& a, const Context&) {
  if (a.w.scaled()) return ref_matmul_w8a8(a);
  const int64_t m = a.x.rows(), k = a.x.cols(), n = a.w.out_features();
  std::vector<float> wrow(k);
  for (int64_t j = 0; j < n; ++j) {
    ref_weight_row(a.w, j, wrow.data());
    for (int64_t i = 0; i < m; ++i) {
      const float* x = a.x.ptr<float>() + i * k;
      double acc = 0;
      for (int64_t l = 0; l < k; ++l) acc += static_cast<double>(x[l]) * wrow[l];
      if (a.bias) acc += a.bias->ptr<float>()[j];
      a.y.ptr<float>()[i * n + j] = static_cast<float>(acc);
    }
  }
}

void ref_rmsnorm(const RmsnormArgs& a, const Context&) {
  const int64_t rows = a.x.rows(), d = a.x.cols();
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = a.x.ptr<float>() + r * d;
    float* y = a.y.ptr<float>() + r * d;
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += static_cast<double>(x[i]) * x[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / d + a.eps));
    for (int64_t i = 0; i < d; ++i) y[i] = x[i] * inv * a.w.ptr<float>()[i];
  }
}

void ref_add(const BinaryArgs& a, const Context&) {
  for (int64_t i = 0; i < a.y.numel(); ++i) a.y.ptr<float>()[i] = a.a.ptr<float>()[i] + a.b.ptr<float>()[i];
}

void ref_silu_mul(const BinaryArgs& a, const Context&) {
  for (int64_t i = 0; i < a.y.numel(); ++i) {
    const float g = a.a.ptr<float>()[i];
    a.y.ptr<float>()[i] = g / (1.f + std::exp(-g)) * a.b.ptr<float>()[i];
  }
}

void ref_gelu_mul(const BinaryArgs& a, const Context&) {
  for (int64_t i = 0; i < a.y.numel(); ++i) {
    const double g = a.a.ptr<float>()[i];
    const double gelu = 0.5 * g * (1 + std::tanh(0.7978845608028654 * (g + 0.044715 * g * g * g)));
    a.y.ptr<float>()[i] = static_cast<float>(gelu * a.b.ptr<float>()[i]);
  }
}

void ref_rope(const RopeArgs& a, const Context&) {
  const int64_t T = a.x.dim(0), H = a.x.dim(1), D = a.x.dim(2);
  const int half = a.p.rot_dim / 2;
  const std::vector<float> inv_freq = a.p.inv_freq();
  for (int64_t t = 0; t < T; ++t) {
    const int32_t pos = a.positions.ptr<int32_t>()[t];
    for (int64_t h = 0; h < H; ++h) {
      float* x = a.x.ptr<float>() + (t * H + h) * D;
      for (int i = 0; i < half; ++i) {
        const float angle = static_cast<float>(pos) * inv_freq[i];
        const float c = std::cos(angle), s = std::sin(angle);
        const int i0 = a.p.style == RopeParams::Style::Adjacent ? 2 * i : i;
        const int i1 = a.p.style == RopeParams::Style::Adjacent ? 2 * i + 1 : i + half;
        const float x0 = x[i0], x1 = x[i1];
        x[i0] = x0 * c - x1 * s;
        x[i1] = x0 * s + x1 * c;
      }
    }
  }
}

void ref_kv_write(const KvWriteArgs& a, const Context&) {
  const int64_t T = a.k.dim(0);
  const int64_t n_slots = a.cache.num_blocks() * a.cache.k.dim(1);
  const int32_t* slots = a.slots.ptr<int32_t>();
  for (int64_t t = 0; t < T; ++t)
    KS_CHECK(slots[t] >= 0 && slots[t] < n_slots, "kv slot {} outside the cache of {} slots", slots[t], n_slots);
  kv_write_rows(a.cache, a.k.ptr<float>(), a.v.ptr<float>(), slots, 0, T);
  kv_write_key_blocks(a.cache, a.k.ptr<float>(), slots, T);
}

void ref_attention(const AttentionArgs& a, const Context&) {
  const int64_t H = a.q.dim(1), D = a.q.dim(2), Hkv = a.cache.k.dim(2), bs = a.cache.block_size();
  const int64_t group = H / Hkv, kv_row = Hkv * D;
  std::vector<float> kbuf(kv_row), vbuf(kv_row);
  for (const AttentionSeq& s : a.batch.seqs) {
    std::vector<float> keys(static_cast<size_t>(s.kv_len) * kv_row), vals(keys.size());
    for (int32_t p = 0; p < s.kv_len; ++p) {
      const int64_t slot = static_cast<int64_t>(s.block_table[p / bs]) * bs + p % bs;
      kv_load(a.cache, false, slot, keys.data() + p * kv_row);
      kv_load(a.cache, true, slot, vals.data() + p * kv_row);
    }
    for (int32_t i = 0; i < s.q_len; ++i) {
      const int64_t t = s.q_begin + i;
      const int32_t n_ctx = s.kv_len - s.q_len + i + 1;
      const int32_t first = a.batch.window > 0 ? std::max(0, n_ctx - a.batch.window) : 0;
      for (int64_t h = 0; h < H; ++h) {
        const float* q = a.q.ptr<float>() + (t * H + h) * D;
        const int64_t kvh = h / group;
        std::vector<double> w(n_ctx, -INFINITY);  // masked positions (before `first`) weigh exp(-inf) = 0
        double mx = -INFINITY;
        for (int32_t p = first; p < n_ctx; ++p) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(q[d]) * keys[p * kv_row + kvh * D + d];
          w[p] = dot * a.batch.scale;
          mx = std::max(mx, w[p]);
        }
        double sum = 0;
        for (auto& x : w) sum += (x = std::exp(x - mx));
        float* o = a.out.ptr<float>() + (t * H + h) * D;
        for (int64_t d = 0; d < D; ++d) {
          double acc = 0;
          for (int32_t p = 0; p < n_ctx; ++p) acc += w[p] * vals[p * kv_row + kvh * D + d];
          o[d] = static_cast<float>(acc / sum);
        }
      }
    }
  }
}

void ref_layernorm(const LayernormArgs& a, const Context&) {
  const int64_t rows = a.x.rows(), d = a.x.cols();
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = a.x.ptr<float>() + r * d;
    float* y = a.y.ptr<float>() + r * d;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < d; ++i) mean += x[i];
    mean /= d;
    for (int64_t i = 0; i < d; ++i) var += (x[i] - mean) * (x[i] - mean);
    const double inv = 1.0 / std::sqrt(var / d + a.eps);
    for (int64_t i = 0; i < d; ++i)
      y[i] = static_cast<float>((x[i] - mean) * inv * a.w.ptr<float>()[i] + a.b.ptr<float>()[i]);
  }
}

void ref_gelu(const UnaryArgs& a, const Context&) {
  for (int64_t i = 0; i < a.y.numel(); ++i) {
    const double x = a.x.ptr<float>()[i];
    a.y.ptr<float>()[i] = static_cast<float>(0.5 * x * (1 + std::erf(x / std::sqrt(2.0))));
  }
}

void ref_encoder_attention(const EncoderAttentionArgs& a, const Context&) {
  const int64_t H = a.out.dim(1), D = a.out.dim(2), row = 3 * H * D;
  const float* qkv = a.qkv.ptr<float>();
  const int32_t* mask = a.batch.key_mask.empty() ? nullptr : a.batch.key_mask.ptr<int32_t>();
  for (const EncoderSeq& s : a.batch.seqs)
    for (int64_t i = s.begin; i < s.begin + s.len; ++i)
      for (int64_t h = 0; h < H; ++h) {
        const float* q = qkv + i * row + h * D;
        std::vector<double> w(s.len, -INFINITY);  // masked keys weigh exp(-inf) = 0
        double mx = -INFINITY;
        for (int64_t j = 0; j < s.len; ++j) {
          if (mask && mask[s.begin + j] == 0) continue;
          const float* k = qkv + (s.begin + j) * row + H * D + h * D;
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(q[d]) * k[d];
          w[j] = dot * a.batch.scale;
          mx = std::max(mx, w[j]);
        }
        float* o = a.out.ptr<float>() + (i * H + h) * D;
        if (mx == -INFINITY) {  // no key to attend to
          std::fill(o, o + D, 0.f);
          continue;
        }
        double sum = 0;
        for (auto& x : w) sum += (x = std::exp(x - mx));
        for (int64_t d = 0; d < D; ++d) {
          double acc = 0;
          for (int64_t j = 0; j < s.len; ++j) acc += w[j] * qkv[(s.begin + j) * row + 2 * H * D + h * D + d];
          o[d] = static_cast<float>(acc / sum);
        }
      }
}

bool f32_io(const Tensor& a, const Tensor& b, std::string* why) {
  return all_f32({&a, &b}, why);
}

bool f32_binary(const BinaryArgs& a, std::string* why) {
  return all_f32({&a.a, &a.b, &a.y}, why);
}

}  // namespace

void register_reference(Registries& r) {
  constexpr int kRefPriority = 0;  // the oracle: always available, picked only when nothing faster fits
  r.embed.add({"cpu.ref", Device::Cpu, kRefPriority,
               [](const EmbedArgs& a, std::string* why) { return all_f32({&a.out}, why); }, ref_embed});
  r.scatter_rows.add({"cpu.ref", Device::Cpu, kRefPriority,
                      [](const ScatterRowsArgs& a, std::string* why) { return f32_io(a.src, a.dst, why); },
                      ref_scatter_rows});
  r.matmul.add({"cpu.ref", Device::Cpu, kRefPriority,
                [](const MatmulArgs& a, std::string* why) {
                  if (a.w.layout != WeightLayout::Rows) {
                    if (why) *why = "the reference reads weights in rows";
                    return false;
                  }
                  return f32_io(a.x, a.y, why);
                },
                ref_matmul});
  r.rmsnorm.add({"cpu.ref", Device::Cpu, kRefPriority,
                 [](const RmsnormArgs& a, std::string* why) {
                   return all_f32({&a.x, &a.w, &a.y}, why);
                 },
                 ref_rmsnorm});
  r.add.add({"cpu.ref", Device::Cpu, kRefPriority, f32_binary, ref_add});
  r.silu_mul.add({"cpu.ref", Device::Cpu, kRefPriority, f32_binary, ref_silu_mul});
  r.gelu_mul.add({"cpu.ref", Device::Cpu, kRefPriority, f32_binary, ref_gelu_mul});
  r.rope.add({"cpu.ref", Device::Cpu, kRefPriority,
              [](const RopeArgs& a, std::string* why) { return all_f32({&a.x}, why); }, ref_rope});
  r.kv_write.add({"cpu.ref", Device::Cpu, kRefPriority,
                  [](const KvWriteArgs& a, std::string* why) { return f32_io(a.k, a.v, why); }, ref_kv_write});
  r.attention.add({"cpu.ref", Device::Cpu, kRefPriority,
                   [](const AttentionArgs& a, std::string* why) { return f32_io(a.q, a.out, why); }, ref_attention});
  r.layernorm.add({"cpu.ref", Device::Cpu, kRefPriority,
                   [](const LayernormArgs& a, std::string* why) {
                     return all_f32({&a.x, &a.w, &a.b, &a.y}, why);
                   },
                   ref_layernorm});
  r.gelu.add({"cpu.ref", Device::Cpu, kRefPriority,
              [](const UnaryArgs& a, std::string* why) { return f32_io(a.x, a.y, why); }, ref_gelu});
  r.encoder_attention.add({"cpu.ref", Device::Cpu, kRefPriority,
                           [](const EncoderAttentionArgs& a, std::string* why) { return f32_io(a.qkv, a.out, why); },
                           ref_encoder_attention});
}

}  // namespace kestrel::backends::cpu
