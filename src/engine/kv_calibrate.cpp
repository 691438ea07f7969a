#include "engine/kv_calibrate.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <memory>
#include <numeric>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "engine/perplexity.h"
#include "engine/session.h"
#include "model/decoder.h"
#include "ops/context.h"

namespace kestrel {
namespace {

// The formats a calibration serves: their clip ratios are searched for their own code limits.
constexpr std::array<std::string_view, 3> kReorderingFormats = {"skvq-k2v1.5", "skvq-k2v2", "skvq-k4v4"};
// Clip ratios tried: a coarse sweep, then the two halfway points beside the best of it.
constexpr std::array<float, 6> kClipSweep = {1.f, .9f, .8f, .7f, .6f, .5f};
constexpr float kClipRefine = .05f;

// Channels of one head in an order that puts similar ranges side by side: widest range first, so outlier
// channels share a group instead of stretching the scale of ordinary ones.
std::vector<int32_t> order_by_range(std::span<const float> lo, std::span<const float> hi) {
  std::vector<int32_t> order(lo.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return hi[a] - lo[a] > hi[b] - lo[b]; });
  return order;
}

// Calls fn(window) for the consecutive windows of n_ctx tokens (the last may be shorter).
template <typename Fn>
void for_each_window(std::span<const int32_t> tokens, int n_ctx, Fn&& fn) {
  for (size_t at = 0; at < tokens.size(); at += static_cast<size_t>(n_ctx))
    fn(tokens.subspan(at, std::min<size_t>(n_ctx, tokens.size() - at)));
}

// Mean negative log-likelihood of `tokens` (windows of n_ctx, every position after the first scored) with
// the KV cache in format f: the clip search's objective, on the calibration text.
double mean_nll(Decoder& model, const ops::Context& ctx, const KvFormat& f, std::span<const int32_t> tokens,
                int n_ctx) {
  SessionOptions so;
  so.n_ctx = n_ctx;
  so.n_batch = n_ctx;
  so.kv_format = f;
  Session session(model, ctx, so);
  double nll = 0;
  int64_t scored = 0;
  for_each_window(tokens, n_ctx, [&](std::span<const int32_t> part) {
    session.truncate(0);
    Tensor logits = session.feed(part, /*all_logits=*/true);
    const int64_t vocab = logits.dim(1);
    for (size_t i = 0; i + 1 < part.size(); ++i) {
      float* row = logits.ptr<float>() + static_cast<int64_t>(i) * vocab;
      log_softmax(row, vocab);
      nll -= row[part[i + 1]];
      ++scored;
    }
  });
  return scored > 0 ? nll / static_cast<double>(scored) : 0.0;
}

}  // namespace

KvCalibration calibrate_kv(Decoder& model, const ops::Context& ctx, std::span<const int32_t> tokens,
                           const KvCalibrationOptions& opt, const std::function<void(int, int)>& progress) {
  const ModelConfig& mc = model.config();
  const int L = mc.n_layers, hkv = mc.n_kv_heads, d = mc.head_dim, row = hkv * d;
  const int n_ctx = opt.n_ctx;
  KS_CHECK(!tokens.empty(), "the calibration text has no tokens");
  KS_CHECK(ctx.device == Device::Cpu, "KV calibration runs on the CPU");
  const int windows = static_cast<int>((static_cast<int64_t>(tokens.size()) + n_ctx - 1) / n_ctx);
  const auto search_tokens =
      tokens.first(std::min<size_t>(tokens.size(), size_t(std::max<int64_t>(1, opt.search_tokens))));
  const int n_search = static_cast<int>(kReorderingFormats.size() * 2 * (kClipSweep.size() + 2));
  const int total = windows + n_search;
  int done = 0;

  // 1. Channel ranges over every position, from an f32 cache.
  SessionOptions so;
  so.n_ctx = n_ctx;
  so.n_batch = n_ctx;
  Session session(model, ctx, so);
  std::vector<std::vector<float>> lo(2 * L, std::vector<float>(row, INFINITY)),
      hi(2 * L, std::vector<float>(row, -INFINITY));
  std::vector<float> k(row), v(row);
  KvCalibration c;
  for_each_window(tokens, n_ctx, [&](std::span<const int32_t> part) {
    session.truncate(0);
    session.feed(part);
    for (int32_t p = 0; p < static_cast<int32_t>(part.size()); ++p)
      for (int l = 0; l < L; ++l) {
        session.read_kv(l, p, k.data(), v.data());
        for (int side = 0; side < 2; ++side) {
          const std::vector<float>& x = side ? v : k;
          std::vector<float>&mn = lo[2 * l + side], &mx = hi[2 * l + side];
          for (int i = 0; i < row; ++i) mn[i] = std::min(mn[i], x[i]), mx[i] = std::max(mx[i], x[i]);
        }
      }
    c.tokens += static_cast<int64_t>(part.size());
    if (progress) progress(++done, total);
  });
  session.truncate(0);
  c.n_layers = L;
  c.n_kv_heads = hkv;
  c.head_dim = d;
  for (int l = 0; l < L; ++l) {
    KvCalibration::Layer layer;
    for (int side = 0; side < 2; ++side) {
      std::vector<int32_t>& order = side ? layer.v_order : layer.k_order;
      for (int h = 0; h < hkv; ++h) {
        const auto o = order_by_range(std::span(lo[2 * l + side]).subspan(size_t(h) * d, d),
                                      std::span(hi[2 * l + side]).subspan(size_t(h) * d, d));
        order.insert(order.end(), o.begin(), o.end());
      }
    }
    c.layers.push_back(std::move(layer));
  }

  // 2. Clip ratios: one per side for all layers (per-group clips over-fit, as SKVQ's authors found), each the
  // candidate with the least NLL on the calibration text, keys first (values at the format's default), then
  // values with the keys' choice.
  auto orders = std::make_shared<KvCalibration>(c);
  orders->clips.clear();
  for (std::string_view name : kReorderingFormats) {
    KvFormat f = *kv_format_from_name(name);
    f.calibration = orders;
    for (int side = 0; side < 2; ++side) {
      float best = side ? f.v_clip : f.k_clip;
      double best_nll = INFINITY;
      auto consider = [&](float clip) {
        if (clip <= 1.f) {
          KvFormat g = f;
          (side ? g.v_clip : g.k_clip) = clip;
          const double nll = mean_nll(model, ctx, g, search_tokens, n_ctx);
          if (nll < best_nll) best_nll = nll, best = clip;
        }
        if (progress) progress(++done, total);
      };
      for (float clip : kClipSweep) consider(clip);
      const float centre = best;
      for (float clip : {centre + kClipRefine, centre - kClipRefine}) consider(clip);
      (side ? f.v_clip : f.k_clip) = best;
    }
    c.clips[std::string(name)].assign(L, {f.k_clip, f.v_clip});
  }
  return c;
}

}  // namespace kestrel
