// CPU variants of the MoE ops (ops/moe_ops.h): the references ("cpu.ref") and the grouped FFN
// ("cpu.grouped") that permutes tokens by expert and runs each expert's rows through ops::matmul, so every
// weight format the matmul variants know (float, GGUF blocks, grouped codes) works for experts too.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "backends/cpu/register.h"
#include "core/error.h"
#include "ops/moe_dispatch.h"
#include "ops/ops.h"

namespace kestrel::backends::cpu {
namespace {

using namespace ops;

bool f32_tensors(std::initializer_list<const Tensor*> ts, std::string* why) {
  for (const Tensor* t : ts)
    if (t->dtype != DType::F32 || t->device != Device::Cpu) {
      if (why) *why = "the CPU MoE variants take f32 host tensors, got " + t->describe();
      return false;
    }
  return true;
}

void ref_moe_router(const MoeRouterArgs& a, const Context&) {
  const int64_t T = a.logits.dim(0), E = a.logits.dim(1);
  const int k = a.routing.k;
  std::vector<double> p(E);
  std::vector<int32_t> order(E);
  for (int64_t t = 0; t < T; ++t) {
    const float* l = a.logits.ptr<float>() + t * E;
    const double mx = *std::max_element(l, l + E);
    double sum = 0;
    for (int64_t e = 0; e < E; ++e) sum += (p[e] = std::exp(static_cast<double>(l[e]) - mx));
    std::iota(order.begin(), order.end(), 0);
    // Ties go to the lower expert id: the order must not depend on the sort's algorithm.
    std::stable_sort(order.begin(), order.end(), [&](int32_t x, int32_t y) { return p[x] > p[y]; });
    double kept = 0;
    for (int j = 0; j < k; ++j) kept += p[order[j]];
    const double denom = a.routing.normalize ? kept : sum;
    for (int j = 0; j < k; ++j) {
      a.ids.ptr<int32_t>()[t * k + j] = order[j];
      a.weights.ptr<float>()[t * k + j] = static_cast<float>(p[order[j]] / denom);
    }
  }
}

// The experts' FFN token by token, straight from the definition, in double.
void ref_moe_ffn(const MoeFfnArgs& a, const Context&) {
  const int64_t T = a.x.dim(0), D = a.x.dim(1), k = a.ids.dim(1), E = a.experts.count();
  const int64_t F = a.experts.gate[0].out_features();
  std::vector<float> wrow(std::max(D, F));
  std::vector<double> h(F), acc(D);
  for (int64_t t = 0; t < T; ++t) {
    const float* x = a.x.ptr<float>() + t * D;
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t j = 0; j < k; ++j) {
      const int32_t e = a.ids.ptr<int32_t>()[t * k + j];
      KS_CHECK(e >= 0 && e < E, "moe_ffn: expert id {} outside the {} experts", e, E);
      for (int64_t f = 0; f < F; ++f) {
        double g = 0, u = 0;
        dequantize_row(a.experts.gate[e], f, wrow.data());
        for (int64_t d = 0; d < D; ++d) g += static_cast<double>(x[d]) * wrow[d];
        dequantize_row(a.experts.up[e], f, wrow.data());
        for (int64_t d = 0; d < D; ++d) u += static_cast<double>(x[d]) * wrow[d];
        h[f] = g / (1 + std::exp(-g)) * u;
      }
      const double w = a.weights.ptr<float>()[t * k + j];
      for (int64_t d = 0; d < D; ++d) {
        dequantize_row(a.experts.down[e], d, wrow.data());
        double o = 0;
        for (int64_t f = 0; f < F; ++f) o += h[f] * wrow[f];
        acc[d] += w * o;
      }
    }
    for (int64_t d = 0; d < D; ++d) a.y.ptr<float>()[t * D + d] = static_cast<float>(acc[d]);
  }
}

// Grouped: the (token, slot) pairs sorted by expert (stable, so by token within an expert), each expert's
// rows gathered into one matrix and run as three matmuls, the results written back per pair and summed
// over a token's slots in slot order (the same order as the reference, whatever the batch).
void grouped_moe_ffn(const MoeFfnArgs& a, const Context& ctx) {
  const int64_t T = a.x.dim(0), D = a.x.dim(1), k = a.ids.dim(1), E = a.experts.count();
  const int64_t F = a.experts.gate[0].out_features();
  const int32_t* ids = a.ids.ptr<int32_t>();
  std::vector<int64_t> begin(E + 1, 0);
  for (int64_t i = 0; i < T * k; ++i) {
    KS_CHECK(ids[i] >= 0 && ids[i] < E, "moe_ffn: expert id {} outside the {} experts", ids[i], E);
    ++begin[ids[i] + 1];
  }
  std::partial_sum(begin.begin(), begin.end(), begin.begin());
  std::vector<int64_t> pairs(T * k), fill(begin.begin(), begin.end() - 1);
  for (int64_t i = 0; i < T * k; ++i) pairs[fill[ids[i]]++] = i;  // pair i = token i / k, slot i % k

  Tensor out = Tensor::empty_host(DType::F32, {T * k, D});  // each pair's expert output
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = begin[e + 1] - begin[e];
    if (n == 0) continue;
    Tensor xe = Tensor::empty_host(DType::F32, {n, D}), g = Tensor::empty_host(DType::F32, {n, F}),
           u = Tensor::empty_host(DType::F32, {n, F}), ye = Tensor::empty_host(DType::F32, {n, D});
    for (int64_t r = 0; r < n; ++r) std::memcpy(xe.row(r), a.x.row(pairs[begin[e] + r] / k), xe.row_nbytes());
    matmul(ctx, xe, a.experts.gate[e], g);
    matmul(ctx, xe, a.experts.up[e], u);
    silu_mul(ctx, g, u, g);
    matmul(ctx, g, a.experts.down[e], ye);
    for (int64_t r = 0; r < n; ++r) std::memcpy(out.row(pairs[begin[e] + r]), ye.row(r), out.row_nbytes());
  }
  for (int64_t t = 0; t < T; ++t) {
    float* y = a.y.ptr<float>() + t * D;
    std::fill(y, y + D, 0.f);
    for (int64_t j = 0; j < k; ++j) {
      const float w = a.weights.ptr<float>()[t * k + j];
      const float* o = out.ptr<float>() + (t * k + j) * D;
      for (int64_t d = 0; d < D; ++d) y[d] += w * o[d];
    }
  }
}

bool router_supports(const MoeRouterArgs& a, std::string* why) {
  return f32_tensors({&a.logits, &a.weights}, why);
}

bool ffn_supports(const MoeFfnArgs& a, std::string* why) {
  if (!f32_tensors({&a.x, &a.weights, &a.y}, why)) return false;
  for (const auto* set : {&a.experts.gate, &a.experts.up, &a.experts.down})
    for (const Linear& w : *set)
      if (w.weight.device != Device::Cpu) {
        if (why) *why = "expert weights must be in host memory, got " + w.describe();
        return false;
      }
  return true;
}

}  // namespace

void register_moe_variants(MoeRegistries& r) {
  r.moe_router.add({"cpu.ref", Device::Cpu, 0, router_supports, ref_moe_router});
  r.moe_ffn.add({"cpu.ref", Device::Cpu, 0, ffn_supports, ref_moe_ffn});
  r.moe_ffn.add({"cpu.grouped", Device::Cpu, 10, ffn_supports, grouped_moe_ffn});
}

}  // namespace kestrel::backends::cpu
