// The reference of ops::sample (ops.h): one row at a time, in the order the contract states. The CUDA
// kernels follow it step for step; given the same uniform they pick the same token, except where float
// sums put the draw within rounding of a boundary between two tokens.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "backends/cpu/reference.h"
#include "core/error.h"
#include "ops/dispatch.h"

namespace kestrel::backends::cpu {
namespace {

using namespace ops;

float clean(float v) {
  return std::isnan(v) ? -INFINITY : v;
}

void sample_row(float* l, int64_t V, const SampleRow& p, PenaltyEntry* entries, const uint32_t* mask, SampleOut& o) {
  double lse = 0;
  if (p.flags & kSampleLogprobs) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < V; ++i) mx = std::max(mx, clean(l[i]));
    double sum = 0;
    for (int64_t i = 0; i < V; ++i) sum += std::exp(static_cast<double>(clean(l[i])) - mx);
    lse = mx + std::log(sum);
    const int k = static_cast<int>(std::clamp<int64_t>(p.top_logprobs, 0, std::min<int64_t>(kMaxTopLogprobs, V)));
    std::vector<int32_t> idx(V);
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
      return clean(l[a]) > clean(l[b]) || (clean(l[a]) == clean(l[b]) && a < b);
    });
    o.n_top = k;
    for (int i = 0; i < k; ++i) {
      o.top_token[i] = idx[i];
      o.top_logprob[i] = static_cast<float>(clean(l[idx[i]]) - lse);
    }
  }
  for (int32_t e = p.penalty_begin; e < p.penalty_end; ++e) {
    PenaltyEntry& pe = entries[e];
    float& x = l[pe.token];
    pe.raw = x;
    if (pe.window && p.repetition_penalty != 1.f) x = x > 0 ? x / p.repetition_penalty : x * p.repetition_penalty;
    if (pe.count > 0) x -= p.presence_penalty + p.frequency_penalty * static_cast<float>(pe.count);
    x += pe.bias;
  }
  if (mask)
    for (int64_t i = 0; i < V; ++i)
      if (!((mask[i >> 5] >> (i & 31)) & 1)) l[i] = -INFINITY;
  if (!(p.flags & kSampleRow)) return;

  int32_t best = 0;
  for (int64_t i = 1; i < V; ++i)
    if (clean(l[i]) > clean(l[best])) best = static_cast<int32_t>(i);
  const float vmax = clean(l[best]);
  int32_t pick = best;
  if (!(p.temperature <= 0.f || p.top_k == 1 || vmax == -INFINITY)) {
    const float inv_t = 1.f / p.temperature;
    auto mass = [&](float v) { return std::exp((v - vmax) * inv_t); };
    float floor = -INFINITY;  // tokens with a logit >= floor are kept; ties at a threshold all stay
    std::vector<float> sorted;
    if ((p.top_k > 0 && p.top_k < V) || p.top_p < 1.f) {
      sorted.reserve(V);
      for (int64_t i = 0; i < V; ++i)
        if (clean(l[i]) != -INFINITY) sorted.push_back(clean(l[i]));
      std::sort(sorted.begin(), sorted.end(), std::greater<>());
    }
    // Fewer finite logits than top_k: the k-th largest is -inf, so the filter keeps them all.
    if (p.top_k > 0 && p.top_k < static_cast<int64_t>(sorted.size())) floor = sorted[p.top_k - 1];
    // -inf logits (masked or banned tokens) carry no mass and are never drawn: every loop skips them, so
    // a mostly masked row (structured output) costs what its allowed tokens cost.
    if (p.top_p < 1.f) {
      double total = 0;
      for (float v : sorted)
        if (v >= floor && v != -INFINITY) total += mass(v);
      const double target = p.top_p * total;
      double cum = 0;
      for (float v : sorted) {
        if (v < floor || v == -INFINITY) break;
        cum += mass(v);
        if (cum >= target) {
          floor = v;
          break;
        }
      }
    }
    if (p.min_p > 0.f) floor = std::max(floor, vmax + p.temperature * std::log(p.min_p));
    double total = 0;
    for (int64_t i = 0; i < V; ++i)
      if (clean(l[i]) >= floor && clean(l[i]) != -INFINITY) total += mass(clean(l[i]));
    const double u = static_cast<double>(p.uniform) * total;
    double cum = 0;
    int32_t last = best;
    pick = -1;
    for (int64_t i = 0; i < V && pick < 0; ++i) {
      const float v = clean(l[i]);
      if (v < floor || v == -INFINITY) continue;
      cum += mass(v);
      last = static_cast<int32_t>(i);
      if (u < cum) pick = last;
    }
    if (pick < 0) pick = last;
  }
  o.token = pick;
  if (p.flags & kSampleLogprobs) {
    float raw = l[pick];
    for (int32_t e = p.penalty_begin; e < p.penalty_end; ++e)
      if (entries[e].token == pick) raw = entries[e].raw;
    o.logprob = static_cast<float>(clean(raw) - lse);
  }
}

bool sample_supports(const SampleArgs& a, std::string* why) {
  for (const Tensor* t : {static_cast<const Tensor*>(&a.logits), &a.rows, static_cast<const Tensor*>(&a.out)})
    if (t->device != Device::Cpu) {
      if (why) *why = "tensors must be on the host";
      return false;
    }
  return (a.penalties.empty() || a.penalties.device == Device::Cpu) &&
         (a.masks.empty() || a.masks.device == Device::Cpu);
}

void sample(const SampleArgs& a, const Context&) {
  const int64_t R = a.logits.dim(0), V = a.logits.dim(1);
  const auto* rows = static_cast<const SampleRow*>(a.rows.data);
  auto* entries = static_cast<PenaltyEntry*>(a.penalties.data);
  const int64_t n_entries = a.penalties.empty() ? 0 : a.penalties.rows();
  auto* out = static_cast<SampleOut*>(a.out.data);
  for (int64_t r = 0; r < R; ++r) {
    const SampleRow& p = rows[r];
    KS_CHECK(p.penalty_begin >= 0 && p.penalty_begin <= p.penalty_end && p.penalty_end <= n_entries,
             "sample: row {} names penalty entries [{}, {}) of {}", r, p.penalty_begin, p.penalty_end, n_entries);
    for (int32_t e = p.penalty_begin; e < p.penalty_end; ++e)
      KS_CHECK(entries[e].token >= 0 && entries[e].token < V, "sample: penalty token {} outside the vocabulary",
               entries[e].token);
    const int64_t n_masks = a.masks.empty() ? 0 : a.masks.rows();
    KS_CHECK(p.mask_row < n_masks, "sample: row {} names mask {} of {}", r, p.mask_row, n_masks);
    const uint32_t* mask =
        p.mask_row >= 0 ? static_cast<const uint32_t*>(a.masks.data) + p.mask_row * a.masks.cols() : nullptr;
    out[r] = SampleOut{};
    sample_row(a.logits.ptr<float>() + r * V, V, p, entries, mask, out[r]);
  }
}

bool feed_supports(const FeedSampledArgs& a, std::string* why) {
  if (a.tokens.device == Device::Cpu && a.from.device == Device::Cpu && a.prev.device == Device::Cpu) return true;
  if (why) *why = "tensors must be on the host";
  return false;
}

void feed_sampled(const FeedSampledArgs& a, const Context&) {
  const auto* prev = static_cast<const SampleOut*>(a.prev.data);
  for (int64_t i = 0; i < a.tokens.numel(); ++i) {
    const int32_t f = a.from.ptr<int32_t>()[i];
    if (f >= 0 && f < a.prev.rows()) a.tokens.ptr<int32_t>()[i] = prev[f].token;
  }
}

}  // namespace

void register_sampling(Registries& r) {
  r.sample.add({"cpu.ref", Device::Cpu, 0, sample_supports, sample});
  r.feed_sampled.add({"cpu.ref", Device::Cpu, 0, feed_supports, feed_sampled});
}

}  // namespace kestrel::backends::cpu
