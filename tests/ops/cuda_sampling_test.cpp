// ops::sample on the GPU against the CPU reference (backends/cpu/sampling.cpp): given the same rows (and so
// the same uniforms) both pick the same tokens and report the same logprobs, and the GPU's draws follow the
// filtered distribution (chi-square). Skipped without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <random>

#include "backends/backends.h"
#include "engine/sampler.h"
#include "ops/ops.h"

namespace kestrel {
namespace {

constexpr int kRowWords = sizeof(ops::SampleRow) / 4, kOutWords = sizeof(ops::SampleOut) / 4;

struct Batch {
  Tensor logits, rows, penalties, out, masks;  // host
};

Batch make_batch(const std::vector<std::vector<float>>& logits, const std::vector<ops::SampleRow>& rows,
                 const std::vector<ops::PenaltyEntry>& entries, const std::vector<std::vector<uint32_t>>& masks = {}) {
  const auto R = static_cast<int64_t>(logits.size()), V = static_cast<int64_t>(logits[0].size());
  Batch b;
  b.logits = Tensor::empty_host(DType::F32, {R, V});
  for (int64_t r = 0; r < R; ++r) std::copy(logits[r].begin(), logits[r].end(), b.logits.ptr<float>() + r * V);
  b.rows = Tensor::empty_host(DType::I32, {R, kRowWords});
  std::copy(rows.begin(), rows.end(), static_cast<ops::SampleRow*>(b.rows.data));
  if (!entries.empty()) {
    b.penalties =
        Tensor::empty_host(DType::I32, {static_cast<int64_t>(entries.size()), int64_t{sizeof(ops::PenaltyEntry) / 4}});
    std::copy(entries.begin(), entries.end(), static_cast<ops::PenaltyEntry*>(b.penalties.data));
  }
  b.out = Tensor::empty_host(DType::I32, {R, kOutWords});
  if (!masks.empty()) {
    b.masks = Tensor::empty_host(DType::I32, {static_cast<int64_t>(masks.size()), (V + 31) / 32});
    for (size_t m = 0; m < masks.size(); ++m)
      std::copy(masks[m].begin(), masks[m].end(), b.masks.ptr<int32_t>() + m * b.masks.cols());
  }
  return b;
}

Tensor clone(const Tensor& t) {
  Tensor c = Tensor::empty_host(t.dtype, t.shape);
  std::memcpy(c.data, t.data, t.nbytes());
  return c;
}

// Runs the batch on `ctx` (uploading and downloading around it); returns the output rows. The op changes
// logits and penalty entries in place, so it runs on copies (the CPU's upload is no copy).
std::vector<ops::SampleOut> run(const ops::Context& ctx, const Batch& h) {
  Tensor logits = ops::upload(ctx, clone(h.logits)), rows = ops::upload(ctx, h.rows), out = ops::upload(ctx, h.out);
  Tensor pen = h.penalties.empty() ? Tensor{} : ops::upload(ctx, clone(h.penalties));
  Tensor masks = h.masks.empty() ? Tensor{} : ops::upload(ctx, h.masks);
  ops::sample(ctx, logits, rows, pen, out, masks);
  Tensor back = Tensor::empty_host(DType::I32, out.shape);
  ops::download(ctx, out, back);
  const auto* o = static_cast<const ops::SampleOut*>(back.data);
  return std::vector<ops::SampleOut>(o, o + h.logits.dim(0));
}

#define REQUIRE_GPU() \
  if (!backends::available(Device::Cuda)) GTEST_SKIP() << "no CUDA device: GPU sampling checks skipped"

TEST(CudaSampling, SameTokensAndLogprobsAsTheReference) {
  REQUIRE_GPU();
  std::mt19937 rng(7);
  const int R = 96, V = 32000;
  std::vector<std::vector<float>> logits(R, std::vector<float>(V));
  std::normal_distribution<float> nd(0.f, 2.f);
  for (auto& row : logits)
    for (float& x : row) x = nd(rng);
  std::vector<ops::SampleRow> rows;
  std::vector<ops::PenaltyEntry> entries;
  std::vector<std::vector<uint32_t>> masks;
  const SamplingParams kinds[] = {
      {},
      {.temperature = 1.f, .seed = 1},
      {.temperature = 0.7f, .top_k = 50, .seed = 2},
      {.temperature = 1.1f, .top_p = 0.9f, .seed = 3},
      {.temperature = 0.9f, .min_p = 0.05f, .seed = 4},
      {.temperature = 1.f, .top_k = 100, .top_p = 0.8f, .min_p = 0.01f, .seed = 5},
      {.temperature = 0.8f, .repetition_penalty = 1.3f, .presence_penalty = 0.4f, .frequency_penalty = 0.3f, .seed = 6},
      {.repetition_penalty = 2.f, .penalty_last_n = 4},
  };
  for (int r = 0; r < R; ++r) {
    const SamplingParams& p = kinds[r % std::size(kinds)];
    ops::SampleRow row = sample_row(p, static_cast<uint64_t>(r), r % 3 == 0 ? 5 : -1);
    std::vector<int32_t> history;
    // Penalise the row's own top tokens, so the penalties change picks.
    std::vector<int32_t> idx(V);
    for (int i = 0; i < V; ++i) idx[i] = i;
    std::partial_sort(idx.begin(), idx.begin() + 6, idx.end(),
                      [&](int a, int b) { return logits[r][a] > logits[r][b]; });
    history.assign(idx.begin(), idx.begin() + 6);
    history.push_back(idx[0]);
    // Biases on the same top tokens: logit_bias on some rows, min_tokens' bans (7 generated < 10) on others.
    SamplingParams q = p;
    if (r % 4 == 1) q.logit_bias = {{idx[0], -100.f}, {idx[7], 3.f}};
    if (r % 4 == 2) q.min_tokens = 10, q.min_tokens_ban = {idx[0], idx[1]};
    add_penalties(q, history, static_cast<int>(history.size()), row, entries);
    // A structured-output mask on every fifth row: a random third of the vocabulary, never its top tokens.
    if (r % 5 == 3) {
      std::vector<uint32_t> m((V + 31) / 32, 0);
      for (int t = 0; t < V; ++t)
        if (rng() % 3 == 0) m[t >> 5] |= 1u << (t & 31);
      for (int i = 0; i < 6; ++i) m[idx[i] >> 5] &= ~(1u << (idx[i] & 31));
      row.mask_row = static_cast<int32_t>(masks.size());
      masks.push_back(std::move(m));
    }
    rows.push_back(row);
  }
  const Batch b = make_batch(logits, rows, entries, masks);
  const auto cpu = run(ops::Context{}, b), gpu = run(backends::make_context(Device::Cuda), b);
  int same = 0;
  for (int r = 0; r < R; ++r) {
    same += cpu[r].token == gpu[r].token;
    if (rows[r].mask_row >= 0) {
      const std::vector<uint32_t>& m = masks[rows[r].mask_row];
      EXPECT_TRUE((m[gpu[r].token >> 5] >> (gpu[r].token & 31)) & 1) << "row " << r << " drew a masked token";
      EXPECT_TRUE((m[cpu[r].token >> 5] >> (cpu[r].token & 31)) & 1) << "row " << r << " drew a masked token";
    }
    if (rows[r].flags & ops::kSampleLogprobs) {
      EXPECT_NEAR(gpu[r].logprob, cpu[r].logprob, 2e-3) << "row " << r;
      ASSERT_EQ(gpu[r].n_top, 5);
      for (int i = 0; i < 5; ++i) {
        EXPECT_EQ(gpu[r].top_token[i], cpu[r].top_token[i]) << "row " << r;
        EXPECT_NEAR(gpu[r].top_logprob[i], cpu[r].top_logprob[i], 2e-3) << "row " << r;
      }
    }
  }
  // Float sums differ between the two; a draw within rounding of a boundary may go either way.
  EXPECT_GE(same, R - 1) << same << " of " << R << " rows agree";
}

// The GPU's draws over many uniforms against the distribution the filters leave (chi-square; the bound is
// the 0.999 quantile for the degrees of freedom, so a correct sampler fails about once in a thousand runs
// of a new seed, and never with this fixed one).
TEST(CudaSampling, DrawsFollowTheFilteredDistribution) {
  REQUIRE_GPU();
  const int V = 1000, R = 8000;
  const std::vector<float> top = {3.f, 2.6f, 2.2f, 1.8f, 1.4f, 1.f, 0.6f, 0.2f};
  std::vector<float> row(V, -8.f);
  for (size_t i = 0; i < top.size(); ++i) row[100 + 37 * i] = top[i];
  struct Case {
    SamplingParams p;
    int kept;  // how many of `top` the filters keep (the -8 tail is cut by each case's filter)
    double chi2_bound;
  };
  for (const Case& c : {Case{{.temperature = 1.f, .top_k = 8, .seed = 11}, 8, 24.3},
                        Case{{.temperature = 0.8f, .top_k = 4, .seed = 12}, 4, 16.3},
                        Case{{.temperature = 1.f, .top_k = 8, .top_p = 0.7f, .seed = 13}, 3, 13.8}}) {
    std::vector<ops::SampleRow> rows;
    for (int r = 0; r < R; ++r) rows.push_back(sample_row(c.p, static_cast<uint64_t>(r), -1));
    const Batch b = make_batch(std::vector<std::vector<float>>(R, row), rows, {});
    const auto gpu = run(backends::make_context(Device::Cuda), b);
    std::map<int32_t, int> counts;
    for (const auto& o : gpu) ++counts[o.token];
    double z = 0;
    for (int i = 0; i < c.kept; ++i) z += std::exp(top[i] / c.p.temperature);
    double chi2 = 0;
    int seen = 0;
    for (int i = 0; i < c.kept; ++i) {
      const double expect = R * std::exp(top[i] / c.p.temperature) / z;
      const int got = counts[100 + 37 * i];
      seen += got;
      chi2 += (got - expect) * (got - expect) / expect;
    }
    EXPECT_EQ(seen, R) << "draws outside the kept tokens";
    EXPECT_LT(chi2, c.chi2_bound) << "top_k " << c.p.top_k << " top_p " << c.p.top_p;
  }
}

}  // namespace
}  // namespace kestrel
