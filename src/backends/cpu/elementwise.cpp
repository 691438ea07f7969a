// Row-wise and elementwise ops (rmsnorm, layernorm, add, silu_mul, gelu, rope, embed, scatter_rows, kv_write): threaded
// only when a call is big enough to pay for the fork/join (prefill); a decode step's 576-wide rows run inline.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backends/cpu/fast_ops.h"
#include "core/dequant.h"
#include "core/error.h"
#include "core/thread_pool.h"

namespace kestrel::backends::cpu {
namespace {

// Elements below which an op runs on the calling thread.
constexpr int64_t kMinParallelElems = 1 << 14;

// Runs fn(begin, end) over [0, n) items of `item_elems` elements each, threaded when large.
template <typename Fn>
void for_rows(const ops::Context& ctx, int64_t n, int64_t item_elems, Fn&& fn) {
  if (n * item_elems < kMinParallelElems || n < 2)
    fn(int64_t{0}, n);
  else
    ctx.threads().parallel_for(n, fn);
}

}  // namespace

bool add_supports(const ops::BinaryArgs& a, std::string* why) {
  return all_f32({&a.a, &a.b, &a.y}, why);
}

void add(const ops::BinaryArgs& a, const ops::Context& ctx) {
  const float* x = a.a.ptr<float>();
  const float* z = a.b.ptr<float>();
  float* y = a.y.ptr<float>();
  for_rows(ctx, a.y.numel(), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) y[i] = x[i] + z[i];
  });
}

bool act_mul_supports(const ops::BinaryArgs& a, std::string* why) {
  return all_f32({&a.a, &a.b, &a.y}, why);
}

void silu_mul(const Kernels& k, const ops::BinaryArgs& a, const ops::Context& ctx) {
  // Chunks of 64 keep each thread's range a whole number of SIMD vectors.
  constexpr int64_t kChunk = 64;
  const int64_t n = a.y.numel();
  for_rows(ctx, (n + kChunk - 1) / kChunk, kChunk, [&](int64_t b, int64_t e) {
    const int64_t lo = b * kChunk, hi = std::min(n, e * kChunk);
    k.silu_mul(a.a.ptr<float>() + lo, a.b.ptr<float>() + lo, a.y.ptr<float>() + lo, hi - lo);
  });
}

void gelu_mul(const ops::BinaryArgs& a, const ops::Context& ctx) {
  const float *g = a.a.ptr<float>(), *u = a.b.ptr<float>();
  float* y = a.y.ptr<float>();
  for_rows(ctx, a.y.numel(), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      y[i] = 0.5f * g[i] * (1.f + std::tanh(0.7978845608f * (g[i] + 0.044715f * g[i] * g[i] * g[i]))) * u[i];
  });
}

bool rmsnorm_supports(const ops::RmsnormArgs& a, std::string* why) {
  return all_f32({&a.x, &a.w, &a.y}, why);
}

void rmsnorm(const ops::RmsnormArgs& a, const ops::Context& ctx) {
  const int64_t d = a.x.cols();
  KS_CHECK(a.w.numel() == d && a.y.numel() == a.x.numel(), "rmsnorm shape mismatch: x {} w {} y {}", a.x.describe(),
           a.w.describe(), a.y.describe());
  const float* w = a.w.ptr<float>();
  for_rows(ctx, a.x.rows(), d, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* x = a.x.ptr<float>() + r * d;
      float* y = a.y.ptr<float>() + r * d;
      const double ss = partial_sums(d, [x](int64_t i) { return x[i] * x[i]; });
      const float inv = static_cast<float>(1.0 / std::sqrt(ss / d + a.eps));
      for (int64_t j = 0; j < d; ++j) y[j] = x[j] * inv * w[j];
    }
  });
}

bool layernorm_supports(const ops::LayernormArgs& a, std::string* why) {
  return all_f32({&a.x, &a.w, &a.b, &a.y}, why);
}

void layernorm(const ops::LayernormArgs& a, const ops::Context& ctx) {
  const int64_t d = a.x.cols();
  const float *w = a.w.ptr<float>(), *bias = a.b.ptr<float>();
  for_rows(ctx, a.x.rows(), d, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* x = a.x.ptr<float>() + r * d;
      float* y = a.y.ptr<float>() + r * d;
      // Two passes (mean, then squared deviations): one-pass E[x^2] - E[x]^2 cancels badly when the
      // residual stream has a large mean.
      const auto mean = static_cast<float>(partial_sums(d, [x](int64_t i) { return x[i]; }) / d);
      const double ss = partial_sums(d, [x, mean](int64_t i) { return (x[i] - mean) * (x[i] - mean); });
      const float inv = static_cast<float>(1.0 / std::sqrt(ss / d + a.eps));
      for (int64_t j = 0; j < d; ++j) y[j] = (x[j] - mean) * inv * w[j] + bias[j];
    }
  });
}

bool gelu_supports(const ops::UnaryArgs& a, std::string* why) {
  return all_f32({&a.x, &a.y}, why);
}

void gelu(const ops::UnaryArgs& a, const ops::Context& ctx) {
  const float* x = a.x.ptr<float>();
  float* y = a.y.ptr<float>();
  constexpr float kInvSqrt2 = 0.70710678118654752f;
  for_rows(ctx, a.y.numel(), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) y[i] = 0.5f * x[i] * (1.f + std::erf(x[i] * kInvSqrt2));
  });
}

bool rope_supports(const ops::RopeArgs& a, std::string* why) {
  return all_f32({&a.x}, why) && a.positions.dtype == DType::I32;
}

void rope(const ops::RopeArgs& a, const ops::Context& ctx) {
  const int64_t T = a.x.dim(0), H = a.x.dim(1), D = a.x.dim(2);
  const int half = a.p.rot_dim / 2;
  KS_CHECK(a.p.rot_dim % 2 == 0 && a.p.rot_dim <= D && a.positions.numel() == T,
           "rope shape mismatch: x {} positions {} rot_dim {}", a.x.describe(), a.positions.describe(), a.p.rot_dim);
  const std::vector<float> inv_freq = a.p.inv_freq();
  const bool adjacent = a.p.style == ops::RopeParams::Style::Adjacent;
  for_rows(ctx, T, H * D, [&](int64_t b, int64_t e) {
    std::vector<float> cs(half), sn(half);
    for (int64_t t = b; t < e; ++t) {
      // Same float angle as the reference, computed once per token for all heads.
      const float pos = static_cast<float>(a.positions.ptr<int32_t>()[t]);
      for (int i = 0; i < half; ++i) {
        const float angle = pos * inv_freq[i];
        cs[i] = std::cos(angle);
        sn[i] = std::sin(angle);
      }
      for (int64_t h = 0; h < H; ++h) {
        float* x = a.x.ptr<float>() + (t * H + h) * D;
        if (adjacent) {
          for (int i = 0; i < half; ++i) {
            const float x0 = x[2 * i], x1 = x[2 * i + 1];
            x[2 * i] = x0 * cs[i] - x1 * sn[i];
            x[2 * i + 1] = x0 * sn[i] + x1 * cs[i];
          }
        } else {
          for (int i = 0; i < half; ++i) {
            const float x0 = x[i], x1 = x[i + half];
            x[i] = x0 * cs[i] - x1 * sn[i];
            x[i + half] = x0 * sn[i] + x1 * cs[i];
          }
        }
      }
    }
  });
}

bool embed_supports(const ops::EmbedArgs& a, std::string* why) {
  if (!all_f32({&a.out}, why)) return false;
  if (a.ids.dtype != DType::I32) {
    if (why) *why = "ids must be i32, got " + a.ids.describe();
    return false;
  }
  return true;
}

void embed(const ops::EmbedArgs& a, const ops::Context& ctx) {
  const int64_t n = a.ids.numel(), d = a.table.cols(), vocab = a.table.rows();
  KS_CHECK(a.out.numel() == n * d, "embed output {} does not hold {} rows of {}", a.out.describe(), n, d);
  const int32_t* ids = a.ids.ptr<int32_t>();
  for (int64_t t = 0; t < n; ++t)
    KS_CHECK(ids[t] >= 0 && ids[t] < vocab, "token id {} outside the vocabulary of {}", ids[t], vocab);
  for_rows(ctx, n, d, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      float* out = a.out.ptr<float>() + t * d;
      dequantize_row(a.table.dtype, a.table.row(ids[t]), out, d);
      if (a.scale != 1.f)
        for (int64_t i = 0; i < d; ++i) out[i] *= a.scale;
    }
  });
}

bool scatter_rows_supports(const ops::ScatterRowsArgs& a, std::string* why) {
  return all_f32({&a.src, &a.dst}, why);
}

void scatter_rows(const ops::ScatterRowsArgs& a, const ops::Context& ctx) {
  const int64_t n = a.rows.numel(), t = a.dst.rows();
  const int32_t* rows = a.rows.ptr<int32_t>();
  for (int64_t i = 0; i < n; ++i)
    KS_CHECK(rows[i] >= 0 && rows[i] < t, "scatter_rows: row {} outside the {} rows of the output", rows[i], t);
  for_rows(ctx, n, a.dst.cols(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) std::memcpy(a.dst.row(rows[i]), a.src.row(i), a.dst.row_nbytes());
  });
}

bool kv_write_supports(const ops::KvWriteArgs& a, std::string* why) {
  if (!all_f32({&a.k, &a.v}, why)) return false;
  if (!ops::is_kv_page(a.cache.k, a.cache.k_params, a.cache.k_coding.token_group) ||
      !ops::is_kv_page(a.cache.v, a.cache.v_params, a.cache.v_coding.token_group)) {
    if (why) *why = "cache pages of " + a.cache.k.describe() + " are not a KV cache format";
    return false;
  }
  if (a.slots.dtype != DType::I32) {
    if (why) *why = "slots must be i32, got " + a.slots.describe();
    return false;
  }
  return true;
}

void kv_write(const ops::KvWriteArgs& a, const ops::Context& ctx) {
  const int64_t T = a.k.dim(0), row = a.k.dim(1) * a.k.dim(2);
  const int64_t n_slots = a.cache.num_blocks() * a.cache.k.dim(1);
  KS_CHECK(
      a.v.numel() == T * row && a.cache.v.numel() == a.cache.k.numel() && a.cache.k.dim(2) * a.cache.k.dim(3) == row,
      "kv_write shape mismatch: k {} v {} cache k {} v {}", a.k.describe(), a.v.describe(), a.cache.k.describe(),
      a.cache.v.describe());
  const int32_t* slots = a.slots.ptr<int32_t>();
  for (int64_t t = 0; t < T; ++t)
    KS_CHECK(slots[t] >= 0 && slots[t] < n_slots, "kv slot {} outside the cache of {} slots", slots[t], n_slots);
  for_rows(ctx, T, 2 * row,
           [&](int64_t b, int64_t e) { ops::kv_write_rows(a.cache, a.k.ptr<float>(), a.v.ptr<float>(), slots, b, e); });
  ops::kv_write_key_blocks(a.cache, a.k.ptr<float>(), slots, T);
}

}  // namespace kestrel::backends::cpu
