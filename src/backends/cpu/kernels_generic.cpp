// The portable kernel table: the same integer-dot algorithm as the x86 tables in plain C++ (8- and
// 16-bit activations), for CPUs without AVX2 (and as a readable statement of what the SIMD kernels compute).
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "backends/cpu/kernels.h"
#include "core/half.h"
#include "core/quant_blocks.h"

namespace kestrel::backends::cpu {
namespace {

using namespace quant;

// Symmetric per-32-block quantization to integers in [-qmax, qmax] (x ~= d * qs), shared by both
// activation formats.
template <class XBlock, int kQMax>
void quantize_x32(const float* x, XBlock* y, int64_t k) {
  for (int64_t b = 0; b < k / 32; ++b, x += 32) {
    float am = 0;
    for (int i = 0; i < 32; ++i) am = std::max(am, std::fabs(x[i]));
    const float id = am > 0 ? kQMax / am : 0.f;
    int sum[2] = {0, 0};
    for (int i = 0; i < 32; ++i) {
      y[b].qs[i] = static_cast<std::remove_cvref_t<decltype(y[b].qs[0])>>(std::nearbyint(x[i] * id));
      sum[i / 16] += y[b].qs[i];
    }
    y[b].d = am / kQMax;
    y[b].s = y[b].d * static_cast<float>(sum[0] + sum[1]);
    if constexpr (requires { y[b].sum; }) {
      y[b].sum[0] = static_cast<int16_t>(sum[0]);
      y[b].sum[1] = static_cast<int16_t>(sum[1]);
    }
  }
}

// Group j (32 elements) of a weight block as integers q with sum_i w_i x_i =
// sum over halves h of (ws[h] * sum_{i in h} q_i x_i + off[h] * sum_{i in h} x_i).
struct Group {
  int q[32];
  float ws[2];
  float off[2];
};

void nibbles(const uint8_t* qs, int* q) {
  for (int i = 0; i < 16; ++i) q[i] = qs[i] & 0xF, q[i + 16] = qs[i] >> 4;
}

// The 32-element types: Q4_0 / Q5_0 (x = (q - 2^(bits - 1)) d) and Q4_1 / Q5_1 (x = q d + m); q is the
// nibble, plus a fifth bit from qh in the Q5 types.
template <class B>
struct DecLegacy {
  using Block = B;
  static constexpr int kGroups = 1;
  static void group(const Block& b, int, Group& g) {
    nibbles(b.qs, g.q);
    float half = 8.f;
    if constexpr (requires { b.qh; }) {
      for (int i = 0; i < 32; ++i) g.q[i] |= q5_high_bit(b.qh, i) << 4;
      half = 16.f;
    }
    const float d = f16_to_f32(b.d);
    g.ws[0] = g.ws[1] = d;
    if constexpr (requires { b.m; })
      g.off[0] = g.off[1] = f16_to_f32(b.m);
    else
      g.off[0] = g.off[1] = -half * d;
  }
};
using DecQ4_0 = DecLegacy<BlockQ4_0>;
using DecQ4_1 = DecLegacy<BlockQ4_1>;
using DecQ5_0 = DecLegacy<BlockQ5_0>;
using DecQ5_1 = DecLegacy<BlockQ5_1>;

struct DecQ8_0 {
  using Block = BlockQ8_0;
  static constexpr int kGroups = 1;
  static void group(const Block& b, int, Group& g) {
    for (int i = 0; i < 32; ++i) g.q[i] = b.qs[i];
    g.ws[0] = g.ws[1] = f16_to_f32(b.d);
    g.off[0] = g.off[1] = 0.f;
  }
};

// Q4_K and Q5_K: 8 groups of 32 with 6-bit scales and mins; q the nibble plus, in Q5_K, a fifth bit from qh.
template <class B>
struct DecK4 {
  using Block = B;
  static constexpr int kGroups = 8;
  static void group(const Block& b, int j, Group& g) {
    uint8_t sc, m;
    q4k_scale_min(j, b.scales, sc, m);
    const uint8_t* qs = b.qs + 32 * (j / 2);
    for (int i = 0; i < 32; ++i) g.q[i] = (j & 1) ? qs[i] >> 4 : qs[i] & 0xF;
    if constexpr (requires { b.qh; })
      for (int i = 0; i < 32; ++i) g.q[i] |= ((b.qh[i] >> j) & 1) << 4;
    g.ws[0] = g.ws[1] = f16_to_f32(b.d) * sc;
    g.off[0] = g.off[1] = -f16_to_f32(b.dmin) * m;
  }
};
using DecQ4_K = DecK4<BlockQ4_K>;
using DecQ5_K = DecK4<BlockQ5_K>;

struct DecQ6_K {
  using Block = BlockQ6_K;
  static constexpr int kGroups = 8;
  // Group j covers elements 128h + 32r .. +31 (h = j / 4, r = j % 4); see dequant_q6_k.
  static void group(const Block& b, int j, Group& g) {
    const int h = j / 4, r = j % 4;
    const uint8_t* ql = b.ql + 64 * h + 32 * (r & 1);
    const uint8_t* qh = b.qh + 32 * h;
    for (int i = 0; i < 32; ++i) g.q[i] = ((r >= 2 ? ql[i] >> 4 : ql[i] & 0xF) | (((qh[i] >> (2 * r)) & 3) << 4));
    const float d = f16_to_f32(b.d);
    for (int half = 0; half < 2; ++half) {
      g.ws[half] = d * b.scales[8 * h + 2 * r + half];
      g.off[half] = -32.f * g.ws[half];
    }
  }
};

// Group j of Q2_K / Q3_K: elements 128 (j / 4) + 32 (j % 4) .. +31, two bits each from qs; its halves are
// sub-blocks 2j and 2j + 1.
void two_bits(const uint8_t* qs, int j, int* q) {
  const uint8_t* p = qs + 32 * (j / 4);
  for (int i = 0; i < 32; ++i) q[i] = (p[i] >> (2 * (j % 4))) & 3;
}

struct DecQ2_K {
  using Block = BlockQ2_K;
  static constexpr int kGroups = 8;
  static void group(const Block& b, int j, Group& g) {
    two_bits(b.qs, j, g.q);
    const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
    for (int half = 0; half < 2; ++half) {
      const uint8_t sc = b.scales[2 * j + half];
      g.ws[half] = d * (sc & 0xF);
      g.off[half] = -dmin * (sc >> 4);
    }
  }
};

struct DecQ3_K {
  using Block = BlockQ3_K;
  static constexpr int kGroups = 8;
  static void group(const Block& b, int j, Group& g) {
    two_bits(b.qs, j, g.q);
    for (int i = 0; i < 32; ++i) g.q[i] |= ((b.hmask[i] >> j) & 1) << 2;
    const float d = f16_to_f32(b.d);
    for (int half = 0; half < 2; ++half) {
      g.ws[half] = d * q3k_scale(b.scales, 2 * j + half);
      g.off[half] = -4.f * g.ws[half];
    }
  }
};

// The same loop for both activation formats; the half sums that the offsets multiply are computed
// here rather than read from the block (BlockQ16x32 stores only the whole-block sum).
template <class Dec, class XBlock>
void dot_quant(int64_t k, const void* w, const void* x, size_t xs, int nx, float* y, int64_t ys) {
  const auto* blocks = static_cast<const typename Dec::Block*>(w);
  float acc[kMaxTileRows] = {};
  Group g;
  for (int64_t b = 0, gi = 0; b < k / (32 * Dec::kGroups); ++b) {
    for (int j = 0; j < Dec::kGroups; ++j, ++gi) {
      Dec::group(blocks[b], j, g);
      for (int r = 0; r < nx; ++r) {
        const XBlock& xb = reinterpret_cast<const XBlock*>(static_cast<const char*>(x) + r * xs)[gi];
        int64_t dot[2] = {0, 0}, sum[2] = {0, 0};
        for (int i = 0; i < 32; ++i) {
          dot[i / 16] += g.q[i] * xb.qs[i];
          sum[i / 16] += xb.qs[i];
        }
        acc[r] += xb.d * (g.ws[0] * dot[0] + g.ws[1] * dot[1] + g.off[0] * sum[0] + g.off[1] * sum[1]);
      }
    }
  }
  for (int r = 0; r < nx; ++r) y[r * ys] = acc[r];
}

template <DType T>
float load1(const void* p, int64_t i) {
  if constexpr (T == DType::F32) return static_cast<const float*>(p)[i];
  if constexpr (T == DType::F16) return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
  if constexpr (T == DType::BF16) return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
}

template <DType T>
void dot_float(int64_t k, const void* w, const void* x, size_t xs, int nx, float* y, int64_t ys) {
  for (int r = 0; r < nx; ++r) {
    const float* xr = reinterpret_cast<const float*>(static_cast<const char*>(x) + r * xs);
    float acc = 0;
    for (int64_t i = 0; i < k; ++i) acc += load1<T>(w, i) * xr[i];
    y[r * ys] = acc;
  }
}

template <DType T>
float kv_dot(const float* q, const void* k, int64_t n) {
  float acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += q[i] * load1<T>(k, i);
  return acc;
}

template <DType T>
void kv_axpy(float a, const void* v, float* acc, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] += a * load1<T>(v, i);
}

void silu_mul(const float* gate, const float* up, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = gate[i] / (1.f + std::exp(-gate[i])) * up[i];
}

float exp_sum(float* x, float shift, int64_t n) {
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += (x[i] = std::exp(x[i] - shift));
  return sum;
}

Kernels make_table() {
  Kernels t{};
  t.name = "generic";
  t.available = [] { return true; };
  t.quantize_q8x32 = quantize_x32<BlockQ8x32, 127>;
  t.quantize_q16x32 = quantize_x32<BlockQ16x32, 32767>;
  auto at = [](DType d) { return static_cast<size_t>(d); };
  for (auto& dot : t.dot) {
    dot[at(DType::F32)] = dot_float<DType::F32>;
    dot[at(DType::F16)] = dot_float<DType::F16>;
    dot[at(DType::BF16)] = dot_float<DType::BF16>;
  }
  auto quant = [&]<class XBlock>(ActFormat f) {
    auto& dot = t.dot[static_cast<size_t>(f)];
    dot[at(DType::Q4_0)] = dot_quant<DecQ4_0, XBlock>;
    dot[at(DType::Q4_1)] = dot_quant<DecQ4_1, XBlock>;
    dot[at(DType::Q8_0)] = dot_quant<DecQ8_0, XBlock>;
    dot[at(DType::Q4_K)] = dot_quant<DecQ4_K, XBlock>;
    dot[at(DType::Q6_K)] = dot_quant<DecQ6_K, XBlock>;
    dot[at(DType::Q5_0)] = dot_quant<DecQ5_0, XBlock>;
    dot[at(DType::Q5_1)] = dot_quant<DecQ5_1, XBlock>;
    dot[at(DType::Q2_K)] = dot_quant<DecQ2_K, XBlock>;
    dot[at(DType::Q3_K)] = dot_quant<DecQ3_K, XBlock>;
    dot[at(DType::Q5_K)] = dot_quant<DecQ5_K, XBlock>;
  };
  quant.operator()<BlockQ8x32>(ActFormat::Q8);
  quant.operator()<BlockQ16x32>(ActFormat::Q16);
  t.kv_dot[at(DType::F32)] = kv_dot<DType::F32>;
  t.kv_dot[at(DType::F16)] = kv_dot<DType::F16>;
  t.kv_dot[at(DType::BF16)] = kv_dot<DType::BF16>;
  t.kv_axpy[at(DType::F32)] = kv_axpy<DType::F32>;
  t.kv_axpy[at(DType::F16)] = kv_axpy<DType::F16>;
  t.kv_axpy[at(DType::BF16)] = kv_axpy<DType::BF16>;
  t.silu_mul = silu_mul;
  t.exp_sum = exp_sum;
  return t;
}

}  // namespace

const Kernels& generic_kernels() {
  static const Kernels table = make_table();
  return table;
}

}  // namespace kestrel::backends::cpu
