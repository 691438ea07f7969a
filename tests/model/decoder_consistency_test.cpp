// The decoder on a random in-memory model: feeding a prompt at once, in chunks, or token by token through
// the paged KV cache must give the same logits; batching two sequences must not mix them.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <optional>
#include <random>

#include "../common/test_model.h"
#include "core/dequant.h"
#include "core/error.h"
#include "engine/executor.h"
#include "engine/session.h"
#include "model/architecture.h"
#include "model/decoder.h"

namespace kestrel {
namespace {

Tensor random_tensor(std::mt19937& rng, std::vector<int64_t> shape, float scale, DType dtype = DType::F32) {
  Tensor f = testing::tiny_random(rng, shape, scale);
  if (dtype == DType::F32) return f;
  Tensor q = Tensor::empty_host(dtype, shape);
  for (int64_t r = 0; r < f.rows(); ++r) quantize_row(dtype, f.ptr<float>() + r * f.cols(), q.row(r), f.cols());
  return q;
}

// v_type: the value projection's type when it should differ from the other weights (as in Q4_K_M files).
Decoder make_decoder(const Architecture& arch, DType wtype, uint32_t seed, std::optional<DType> v_type = {}) {
  const ModelConfig c = testing::tiny_config(arch, 32);
  std::mt19937 rng(seed);
  testing::TinyWeights w;
  const int64_t qd = c.n_heads * c.head_dim, kvd = c.n_kv_heads * c.head_dim;
  w.t["token_embd.weight"] = random_tensor(rng, {c.vocab, c.hidden}, 1.f, wtype);
  w.t["output_norm.weight"] = random_tensor(rng, {c.hidden}, 1.f);
  w.t["output.weight"] = random_tensor(rng, {c.vocab, c.hidden}, 0.2f, wtype);
  for (int l = 0; l < c.n_layers; ++l) {
    auto n = [l](const char* s) { return "blk." + std::to_string(l) + "." + s; };
    w.t[n("attn_norm.weight")] = random_tensor(rng, {c.hidden}, 1.f);
    w.t[n("attn_q.weight")] = random_tensor(rng, {qd, c.hidden}, 0.2f, wtype);
    w.t[n("attn_k.weight")] = random_tensor(rng, {kvd, c.hidden}, 0.2f, wtype);
    w.t[n("attn_v.weight")] = random_tensor(rng, {kvd, c.hidden}, 0.2f, v_type.value_or(wtype));
    w.t[n("attn_output.weight")] = random_tensor(rng, {c.hidden, qd}, 0.2f, wtype);
    w.t[n("attn_q.bias")] = random_tensor(rng, {qd}, 0.2f);
    w.t[n("attn_k.bias")] = random_tensor(rng, {kvd}, 0.2f);
    w.t[n("attn_v.bias")] = random_tensor(rng, {kvd}, 0.2f);
    w.t[n("attn_q_norm.weight")] = random_tensor(rng, {c.head_dim}, 1.f);
    w.t[n("attn_k_norm.weight")] = random_tensor(rng, {c.head_dim}, 1.f);
    w.t[n("ffn_norm.weight")] = random_tensor(rng, {c.hidden}, 1.f);
    w.t[n("ffn_gate.weight")] = random_tensor(rng, {c.ffn, c.hidden}, 0.2f, wtype);
    w.t[n("ffn_up.weight")] = random_tensor(rng, {c.ffn, c.hidden}, 0.2f, wtype);
    w.t[n("ffn_down.weight")] = random_tensor(rng, {c.hidden, c.ffn}, 0.2f, wtype);
  }
  return Decoder(arch, c, DecoderWeights::load(w, arch, c));
}

std::vector<int32_t> prompt(int n) {
  std::vector<int32_t> p(n);
  for (int i = 0; i < n; ++i) p[i] = (i * 37 + 11) % testing::kTinyVocab;
  return p;
}

float max_abs_diff(const float* a, const float* b, int64_t n) {
  float m = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

class DecoderConsistency : public ::testing::TestWithParam<std::tuple<std::string, DType>> {};

TEST_P(DecoderConsistency, PrefillChunkedAndIncrementalAgree) {
  const auto& [arch_name, wtype] = GetParam();
  Decoder dec = make_decoder(architecture_for_hf(arch_name), wtype, 7);
  const auto toks = prompt(37);
  const int64_t V = dec.config().vocab;

  // Chunking and batching change no bit: every kernel computes a row the same way whatever else is in
  // the step (tests/engine/batch_invariance_test.cpp), so the fast kernels run here and agree exactly.
  ops::Context ctx;
  SessionOptions one_shot{.n_ctx = 64, .n_batch = 512, .block_size = 16};
  Session a(dec, ctx, one_shot);
  Tensor all = a.feed(toks, /*all_logits=*/true);

  SessionOptions chunked{.n_ctx = 64, .n_batch = 5, .block_size = 8};
  Session b(dec, ctx, chunked);
  Tensor all_b = b.feed(toks, true);
  EXPECT_EQ(max_abs_diff(all.ptr<float>(), all_b.ptr<float>(), all.numel()), 0.f);

  Session c(dec, ctx, SessionOptions{.n_ctx = 64, .n_batch = 512, .block_size = 4});
  for (size_t i = 0; i < toks.size(); ++i) {
    Tensor l = c.feed(std::span(&toks[i], 1));
    ASSERT_EQ(max_abs_diff(l.ptr<float>(), all.ptr<float>() + i * V, V), 0.f) << "position " << i;
  }
  // Truncate and re-feed: the cache must forget the dropped positions.
  c.truncate(20);
  Tensor l = c.feed(std::span(toks).subspan(20));
  EXPECT_EQ(max_abs_diff(l.ptr<float>(), all.ptr<float>() + (toks.size() - 1) * V, V), 0.f);
}

INSTANTIATE_TEST_SUITE_P(Archs, DecoderConsistency,
                         ::testing::Values(std::make_tuple("llama", DType::F32), std::make_tuple("qwen2", DType::F32),
                                           std::make_tuple("qwen3", DType::F32), std::make_tuple("llama", DType::Q8_0),
                                           std::make_tuple("llama", DType::Q4_1),
                                           std::make_tuple("qwen2", DType::F16)));

TEST(DecoderBatching, TwoSequencesInOneStepMatchSeparateRuns) {
  Decoder dec = make_decoder(architecture_for_hf("llama"), DType::F32, 3);
  const int64_t V = dec.config().vocab;
  KvCacheConfig kc{.n_layers = 2, .n_kv_heads = 2, .head_dim = 32, .block_size = 4, .num_blocks = 64};
  KvCache cache(kc, {});
  SequenceKv s1, s2;
  auto p1 = prompt(13), p2 = prompt(21);
  for (auto& t : p2) t = (t + 5) % testing::kTinyVocab;
  ASSERT_TRUE(s1.reserve(cache, 13));
  ASSERT_TRUE(s2.reserve(cache, 21));
  StepSeq w[2];
  w[0].kv = &s1;
  w[0].tokens = p1;
  w[0].logits = LogitRows::Last;
  w[1].kv = &s2;
  w[1].tokens = p2;
  w[1].logits = LogitRows::Last;
  Executor ex(dec, cache, {}, ExecutorOptions{.max_step_tokens = 64, .max_seqs = 2, .max_kv_len = 32});
  Tensor both = ex.run(w).logits;
  EXPECT_EQ(s1.length(), 13);

  Session a(dec, {}, SessionOptions{.n_ctx = 32});
  Tensor la = a.feed(p1);
  Session c(dec, {}, SessionOptions{.n_ctx = 32});
  Tensor lc = c.feed(p2);
  EXPECT_EQ(max_abs_diff(both.ptr<float>(), la.ptr<float>(), V), 0.f);
  EXPECT_EQ(max_abs_diff(both.ptr<float>() + V, lc.ptr<float>(), V), 0.f);
}

// place_on fuses q/k/v and gate/up into single projections (one matmul each, then rope_kv_write and
// swiglu); the step must compute exactly what the separate projections and unfused ops compute.
TEST(DecoderFusion, FusedProjectionsMatchSeparateOnes) {
  struct Case {
    const char* arch;
    std::optional<DType> v_type;
    bool qkv_fuses;
  };
  for (const Case& c :
       {Case{"llama", {}, true}, Case{"qwen2", {}, true}, Case{"qwen3", {}, true}, Case{"llama", DType::Q8_0, false}}) {
    SCOPED_TRACE(c.arch);
    Decoder separate = make_decoder(architecture_for_hf(c.arch), DType::F32, 5, c.v_type);
    Decoder fused = make_decoder(architecture_for_hf(c.arch), DType::F32, 5, c.v_type);
    ops::Context ctx;
    ctx.forced["matmul"] = "cpu.ref";  // exact dot products, so the comparison is about the fused ops alone
    fused.place_on(ctx);
    EXPECT_EQ(fused.weights().layers[0].wqkv.empty(), !c.qkv_fuses);
    EXPECT_TRUE(fused.weights().layers[0].w_up.empty() && !fused.weights().layers[0].w_gate_up.empty());
    EXPECT_FALSE(separate.weights().layers[0].wq.empty());
    const int64_t V = separate.config().vocab;
    const auto toks = prompt(11);
    Tensor logits[2];
    for (Decoder* d : {&separate, &fused}) {
      KvCache cache(KvCacheConfig{.n_layers = 2, .n_kv_heads = 2, .head_dim = 32, .block_size = 4, .num_blocks = 8},
                    {});
      SequenceKv seq;
      ASSERT_TRUE(seq.reserve(cache, 11));
      StepSeq w;
      w.kv = &seq;
      w.tokens = toks;
      w.logits = LogitRows::All;
      Executor ex(*d, cache, ctx, ExecutorOptions{.max_step_tokens = 16, .max_seqs = 1, .max_kv_len = 16});
      logits[d == &fused] = ex.run(std::span(&w, 1)).logits;
    }
    EXPECT_LT(max_abs_diff(logits[0].ptr<float>(), logits[1].ptr<float>(), 11 * V), 1e-5f);
  }
}

TEST(DecoderErrors, ContextOverflowAndBadTokensAreErrors) {
  Decoder dec = make_decoder(architecture_for_hf("llama"), DType::F32, 1);
  Session s(dec, {}, SessionOptions{.n_ctx = 16});
  EXPECT_THROW(s.feed(prompt(17)), Error);
  EXPECT_EQ(s.length(), 0);
  std::vector<int32_t> bad = {1, 2, 999};
  EXPECT_THROW(s.feed(bad), Error);
}

}  // namespace
}  // namespace kestrel
