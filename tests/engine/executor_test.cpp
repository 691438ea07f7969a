// The step executor on a tiny random model, on the CPU (always) and on CUDA (when a GPU is present):
// a mixed step (decode rows and a prefill chunk) equals the same work in separate steps, a sequence
// with a bad KV block fails alone, sampled tokens follow the reference sampler, single-token steps from
// recorded graphs equal eager steps, prompt embeddings stand in for tokens (and are required of a model that
// runs blocks from the middle), and two lanes run the same weights at once.
#include "engine/executor.h"

#include <gtest/gtest.h>

#include <cmath>
#include <thread>

#include "../common/test_model.h"
#include "../formats/test_files.h"
#include "backends/backends.h"
#include "core/error.h"

namespace kestrel {
namespace {

using testing::tiny_decoder;

std::vector<int32_t> prompt(int n, int salt) {
  std::vector<int32_t> p(n);
  for (int i = 0; i < n; ++i) p[i] = (i * 37 + 11 + salt * 13) % testing::kTinyVocab;
  return p;
}

// The model placed on a device, with a cache and an executor there.
struct Rig {
  std::unique_ptr<Decoder> model;
  ops::Context ctx;
  std::unique_ptr<KvCache> cache;
  std::unique_ptr<Executor> ex;

  Rig(Device d, bool graphs = true, std::shared_ptr<ops::Runtime> lane = nullptr, Decoder* shared = nullptr) {
    ctx = backends::make_context(d);
    if (lane) ctx.runtime = std::move(lane);
    Decoder* m = shared;
    if (!m) {
      model = tiny_decoder(5, 256, d == Device::Cuda ? 64 : 16);
      model->place_on(ctx);
      m = model.get();
    }
    const ModelConfig& c = m->config();
    cache = std::make_unique<KvCache>(
        KvCacheConfig{.n_layers = c.n_layers,
                      .n_kv_heads = c.n_kv_heads,
                      .head_dim = c.head_dim,
                      .block_size = 8,
                      .num_blocks = 128,
                      .format = KvFormat::plain(d == Device::Cuda ? DType::BF16 : DType::F32)},
        ctx);
    ex = std::make_unique<Executor>(
        *m, *cache, ctx, ExecutorOptions{.max_step_tokens = 64, .max_seqs = 8, .max_kv_len = 128, .graphs = graphs});
  }
};

StepSeq step(SequenceKv& kv, std::span<const int32_t> tokens, LogitRows logits = LogitRows::None,
             const SamplingParams* sampling = nullptr) {
  StepSeq s;
  s.kv = &kv;
  s.tokens = tokens;
  s.logits = logits;
  s.sampling = sampling;
  s.draw = static_cast<uint64_t>(kv.length() + tokens.size());
  return s;
}

// max |a - b| over a row, relative to the row's largest |b|.
double rel_diff(const float* a, const float* b, int64_t n) {
  double m = 0, d = 0;
  for (int64_t i = 0; i < n; ++i) {
    m = std::max(m, std::fabs(static_cast<double>(b[i])));
    d = std::max(d, std::fabs(static_cast<double>(a[i]) - b[i]));
  }
  return d / std::max(m, 1e-6);
}

std::vector<Device> devices() {
  std::vector<Device> d = {Device::Cpu};
  if (backends::available(Device::Cuda)) d.push_back(Device::Cuda);
  return d;
}
// f32 on the CPU; bf16 weights, activations and KV on the GPU, where the two schedules round differently.
double tolerance(Device d) {
  return d == Device::Cpu ? 1e-5 : 2e-2;
}

TEST(Executor, MixedStepEqualsSeparateSteps) {
  for (Device d : devices()) {
    SCOPED_TRACE(d == Device::Cpu ? "cpu" : "cuda");
    const auto pa = prompt(9, 1), pb = prompt(7, 2), pc = prompt(12, 3);
    const int32_t next_a = 5, next_c = 17;
    const int64_t V = testing::kTinyVocab;
    // Mixed: A and C decode while B prefills, in one step.
    Rig mixed(d);
    SequenceKv a, b, c;
    for (SequenceKv* s : {&a, &b, &c}) ASSERT_TRUE(s->reserve(*mixed.cache, 32));
    StepSeq pre[2] = {step(a, pa), step(c, pc)};
    mixed.ex->run(pre);
    StepSeq work[3] = {step(a, std::span(&next_a, 1), LogitRows::Last), step(b, pb, LogitRows::Last),
                       step(c, std::span(&next_c, 1), LogitRows::Last)};
    const StepResult m = mixed.ex->run(work);
    ASSERT_EQ(m.logits.dim(0), 3);
    EXPECT_EQ(a.length(), 10);
    EXPECT_EQ(b.length(), 7);
    // Separate: the same work one sequence at a time.
    Rig sep(d);
    SequenceKv a2, b2, c2;
    for (SequenceKv* s : {&a2, &b2, &c2}) ASSERT_TRUE(s->reserve(*sep.cache, 32));
    StepSeq pre2[2] = {step(a2, pa), step(c2, pc)};
    sep.ex->run(pre2);
    const StepSeq one[3] = {step(a2, std::span(&next_a, 1), LogitRows::Last), step(b2, pb, LogitRows::Last),
                            step(c2, std::span(&next_c, 1), LogitRows::Last)};
    for (int i = 0; i < 3; ++i) {
      const StepResult r = sep.ex->run(std::span(&one[i], 1));
      EXPECT_LT(rel_diff(m.logits.ptr<float>() + i * V, r.logits.ptr<float>(), V), tolerance(d)) << "sequence " << i;
    }
  }
}

TEST(Executor, BadKvBlockFailsOnlyItsSequence) {
  for (Device d : devices()) {
    SCOPED_TRACE(d == Device::Cpu ? "cpu" : "cuda");
    Rig rig(d);
    const auto pa = prompt(6, 4);
    SequenceKv good, bad;
    ASSERT_TRUE(good.reserve(*rig.cache, 16));
    bad.adopt_prefix(*rig.cache, {100000});  // a block id far outside the cache
    ASSERT_TRUE(bad.reserve(*rig.cache, 16));
    const int32_t t = 3;
    StepSeq work[2] = {step(bad, std::span(&t, 1), LogitRows::Last), step(good, pa, LogitRows::Last)};
    const StepResult r = rig.ex->run(work);
    EXPECT_NE(r.seqs[0].error.find("outside the cache"), std::string::npos) << r.seqs[0].error;
    EXPECT_TRUE(r.seqs[1].error.empty());
    EXPECT_EQ(good.length(), 6);
    ASSERT_EQ(r.logits.dim(0), 1);  // only the good sequence's row
    Rig alone(d);
    SequenceKv g2;
    ASSERT_TRUE(g2.reserve(*alone.cache, 16));
    const StepSeq s = step(g2, pa, LogitRows::Last);
    const StepResult want = alone.ex->run(std::span(&s, 1));
    EXPECT_LT(rel_diff(r.logits.ptr<float>(), want.logits.ptr<float>(), testing::kTinyVocab), tolerance(d));
  }
}

TEST(Executor, SamplesLikeTheReferenceSampler) {
  for (Device d : devices()) {
    SCOPED_TRACE(d == Device::Cpu ? "cpu" : "cuda");
    Rig rig(d);
    const auto p = prompt(11, 5);
    const std::vector<int32_t> history = {3, 3, 9, 40};
    for (const SamplingParams sp : {SamplingParams{}, SamplingParams{.temperature = 0.9f, .top_k = 40, .seed = 3},
                                    SamplingParams{.temperature = 1.2f, .top_p = 0.8f, .min_p = 0.02f, .seed = 4},
                                    SamplingParams{.temperature = 0.7f,
                                    .repetition_penalty = 1.3f,
                                    .presence_penalty = 0.5f,
                                    .frequency_penalty = 0.2f,
                                    .seed = 5}}) {
      SequenceKv s;
      ASSERT_TRUE(s.reserve(*rig.cache, 16));
      StepSeq w = step(s, p, LogitRows::Last, &sp);
      w.history = history;
      w.top_logprobs = 3;
      const StepResult r = rig.ex->run(std::span(&w, 1));
      ASSERT_TRUE(r.seqs[0].error.empty()) << r.seqs[0].error;
      // The reference sampler on the step's own logits, with the same draw.
      std::vector<float> logits(r.logits.ptr<float>(), r.logits.ptr<float>() + testing::kTinyVocab);
      TokenLogprob lp;
      const int32_t want = sample_host(sp, logits, history, w.draw, &lp, 3);
      EXPECT_EQ(r.seqs[0].token, want);
      EXPECT_NEAR(r.seqs[0].logprob.logprob, lp.logprob, 1e-3);
      ASSERT_EQ(r.seqs[0].logprob.top.size(), 3u);
      for (int i = 0; i < 3; ++i) EXPECT_EQ(r.seqs[0].logprob.top[i].first, lp.top[i].first);
      s.release(*rig.cache);
    }
  }
}

// A sequence that brings its own tokens' embedding rows (StepSeq::embeddings) under placeholder ids, in a
// step beside one that brings tokens, gets the logits of its tokens; a single-token row with embeddings runs
// eagerly and samples what the token sampled from a graph does.
TEST(Executor, PromptEmbeddingsStandInForTheirTokens) {
  for (Device d : devices()) {
    SCOPED_TRACE(d == Device::Cpu ? "cpu" : "cuda");
    const int head_dim = d == Device::Cuda ? 64 : 16;
    const Tensor table = tiny_decoder(5, 256, head_dim)->weights().tok_embd;  // the rigs' model's, on the host
    const int64_t V = testing::kTinyVocab, hidden = table.cols();
    auto rows_of = [&](std::span<const int32_t> ids) {
      std::vector<float> e(ids.size() * hidden);
      for (size_t i = 0; i < ids.size(); ++i) std::copy_n(table.ptr<float>() + ids[i] * hidden, hidden, &e[i * hidden]);
      return e;
    };
    const auto pa = prompt(9, 6), pb = prompt(5, 7);
    const std::vector<int32_t> placeholders(pa.size(), 0);
    const std::vector<float> ea = rows_of(pa);
    Rig with(d), plain(d);
    SequenceKv a, b, a2, b2;
    for (SequenceKv* s : {&a, &b}) ASSERT_TRUE(s->reserve(*with.cache, 32));
    for (SequenceKv* s : {&a2, &b2}) ASSERT_TRUE(s->reserve(*plain.cache, 32));
    StepSeq w[2] = {step(a, placeholders, LogitRows::All), step(b, pb, LogitRows::Last)};
    w[0].embeddings = ea;
    const StepSeq p[2] = {step(a2, pa, LogitRows::All), step(b2, pb, LogitRows::Last)};
    const StepResult r = with.ex->run(w), want = plain.ex->run(p);
    ASSERT_EQ(r.logits.dim(0), static_cast<int64_t>(pa.size()) + 1);
    for (int64_t i = 0; i < r.logits.dim(0); ++i)
      EXPECT_LT(rel_diff(r.logits.ptr<float>() + i * V, want.logits.ptr<float>() + i * V, V), tolerance(d))
          << "row " << i;
    const SamplingParams greedy;
    const int32_t next = 42, placeholder = 0;
    const std::vector<float> en = rows_of(std::span(&next, 1));
    StepSeq one = step(a, std::span(&placeholder, 1), LogitRows::None, &greedy);
    one.embeddings = en;
    const StepSeq one2 = step(a2, std::span(&next, 1), LogitRows::None, &greedy);
    const StepResult r1 = with.ex->run(std::span(&one, 1)), r2 = plain.ex->run(std::span(&one2, 1));
    EXPECT_FALSE(r1.graph);
    EXPECT_EQ(r2.graph, d == Device::Cuda);
    EXPECT_EQ(r1.seqs[0].token, r2.seqs[0].token);
  }
}

// A model told to run blocks [1, 2) starts from the residual stream at block 1's input: a step without
// embeddings, or with the wrong number of values, is refused before anything runs; with them it runs.
TEST(Executor, ALayerRangeFromTheMiddleNeedsEmbeddings) {
  Rig rig(Device::Cpu);
  test::expect_error([&] { rig.model->set_layers(1, 1); }, {"set_layers(1, 1)", "blocks [0, 2)"});
  test::expect_error([&] { rig.model->set_layers(0, 3); }, {"set_layers(0, 3)"});
  rig.model->set_layers(1, 2);
  const int64_t hidden = rig.model->config().hidden;
  SequenceKv s;
  ASSERT_TRUE(s.reserve(*rig.cache, 16));
  const auto p = prompt(4, 8);
  StepSeq w = step(s, p, LogitRows::Last);
  test::expect_error([&] { rig.ex->run(std::span(&w, 1)); },
                     {"runs blocks [1, 2)", "residual stream at block 1's input as embeddings"});
  std::vector<float> stream(p.size() * hidden - 1, 0.5f);
  w.embeddings = stream;
  test::expect_error([&] { rig.ex->run(std::span(&w, 1)); },
                     {fmt::format("brings {} embedding values for 4 tokens", stream.size()),
                      fmt::format("needs {}", stream.size() + 1)});
  EXPECT_EQ(s.length(), 0);
  stream.push_back(0.5f);
  w.embeddings = stream;
  const StepResult r = rig.ex->run(std::span(&w, 1));
  EXPECT_TRUE(r.seqs[0].error.empty()) << r.seqs[0].error;
  EXPECT_EQ(s.length(), 4);
  for (int64_t i = 0; i < testing::kTinyVocab; ++i) ASSERT_TRUE(std::isfinite(r.logits.ptr<float>()[i]));
}

// Single-token steps replay recorded graphs (on CUDA): B sequences of different lengths, padded to the
// bucket, must sample what eager steps with the same inputs sample.
// Graph buckets rise to exactly max_seqs: a step padded past it would overrun the scratch and the staging
// layout (an H100 run at max_seqs 100 once padded to 112 and failed in plan_attention).
TEST(Executor, BucketsEndAtMaxSeqs) {
  for (int s : {1, 2, 3, 24, 25, 100, 112, 128, 129, 1000, 1024, 1500}) {
    const std::vector<int> b = Executor::buckets(s);
    ASSERT_FALSE(b.empty());
    EXPECT_EQ(b.back(), s) << s;
    EXPECT_EQ(b.front(), 1) << s;
    for (size_t i = 1; i < b.size(); ++i) EXPECT_LT(b[i - 1], b[i]) << s;
  }
}

TEST(Executor, GraphStepsEqualEagerSteps) {
  for (Device d : devices()) {
    SCOPED_TRACE(d == Device::Cpu ? "cpu" : "cuda");
    Rig graphs(d, true), eager(d, false);
    const int B = 5;
    std::vector<SequenceKv> sg(B), se(B);
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < B; ++i) prompts.push_back(prompt(3 + 5 * i, 10 + i));
    for (int i = 0; i < B; ++i) {
      ASSERT_TRUE(sg[i].reserve(*graphs.cache, 64));
      ASSERT_TRUE(se[i].reserve(*eager.cache, 64));
      const StepSeq a = step(sg[i], prompts[i]), b = step(se[i], prompts[i]);
      graphs.ex->run(std::span(&a, 1));
      eager.ex->run(std::span(&b, 1));
    }
    const SamplingParams greedy;
    std::vector<int32_t> tg(B), te(B);
    for (int i = 0; i < B; ++i) tg[i] = te[i] = 7 * i + 1;
    int replayed = 0;
    for (int it = 0; it < 6; ++it) {
      std::vector<StepSeq> wg, we;
      for (int i = 0; i < B; ++i) {
        wg.push_back(step(sg[i], std::span(&tg[i], 1), LogitRows::None, &greedy));
        we.push_back(step(se[i], std::span(&te[i], 1), LogitRows::Last, &greedy));  // host logits: eager
      }
      const StepResult rg = graphs.ex->run(wg), re = eager.ex->run(we);
      replayed += rg.graph;
      EXPECT_FALSE(re.graph);
      for (int i = 0; i < B; ++i) {
        EXPECT_EQ(rg.seqs[i].token, re.seqs[i].token) << "step " << it << " sequence " << i;
        EXPECT_EQ(re.seqs[i].token,
                  argmax(std::span(re.logits.ptr<float>() + i * testing::kTinyVocab, testing::kTinyVocab)));
        tg[i] = rg.seqs[i].token;
        te[i] = re.seqs[i].token;
      }
    }
    EXPECT_EQ(replayed, d == Device::Cuda ? 6 : 0);
  }
}

// Quantized weights on the GPU: the buckets past 64 rows multiply a dequantized copy of each matrix from a
// lane workspace that grows on first use. Recording the graphs of every bucket (up to 96 sequences) must
// size it before recording any graph, and a decode step of 80 rows replayed from a graph gives the tokens
// the eager path gives.
TEST(ExecutorCuda, GraphsOverQuantizedWeightsRecordAtEveryBucket) {
  if (!backends::available(Device::Cuda)) GTEST_SKIP() << "no CUDA device";
  const ops::Context ctx = backends::make_context(Device::Cuda);
  auto model = tiny_decoder(5, 256, 64, DType::Q8_0);
  model->place_on(ctx);
  ASSERT_EQ(model->weights().layers[0].w_down.weight.dtype, DType::Q8_0);
  auto run = [&](bool graphs) {
    const ModelConfig& c = model->config();
    KvCache cache(KvCacheConfig{.n_layers = c.n_layers,
                                .n_kv_heads = c.n_kv_heads,
                                .head_dim = c.head_dim,
                                .block_size = 8,
                                .num_blocks = 256,
                                .format = KvFormat::plain(DType::BF16)},
                  ctx);
    Executor ex(*model, cache, ctx,
                ExecutorOptions{.max_step_tokens = 256, .max_seqs = 96, .max_kv_len = 16, .graphs = graphs});
    EXPECT_NO_THROW(ex.capture_graphs());
    const int n = 80;
    std::vector<SequenceKv> seqs(n);
    std::vector<std::vector<int32_t>> prompts;
    std::vector<StepSeq> first;
    for (int i = 0; i < n; ++i) {
      EXPECT_TRUE(seqs[i].reserve(cache, 16));
      prompts.push_back(prompt(2, i));
    }
    const SamplingParams greedy;
    for (int i = 0; i < n; ++i) first.push_back(step(seqs[i], prompts[i], LogitRows::None, &greedy));
    const StepResult r0 = ex.run(first);
    std::vector<int32_t> tok(n), out;
    for (int i = 0; i < n; ++i) tok[i] = r0.seqs[i].token;
    for (int it = 0; it < 3; ++it) {
      std::vector<StepSeq> w;
      for (int i = 0; i < n; ++i) w.push_back(step(seqs[i], std::span(&tok[i], 1), LogitRows::None, &greedy));
      const StepResult r = ex.run(w);
      for (int i = 0; i < n; ++i) out.push_back(tok[i] = r.seqs[i].token);
    }
    return out;
  };
  EXPECT_EQ(run(true), run(false));
}

// Two lanes on one GPU (semi-PD and TP need them): the same weights, a cache and an executor each, stepping
// at once from two threads, give what one lane gives alone.
TEST(ExecutorCuda, TwoLanesOnOneGpu) {
  if (!backends::available(Device::Cuda)) GTEST_SKIP() << "no CUDA device";
  auto model = tiny_decoder(5, 256, 64);
  model->place_on(backends::make_context(Device::Cuda));
  auto run = [&](std::shared_ptr<ops::Runtime> lane, std::vector<int32_t>* out) {
    Rig rig(Device::Cuda, true, std::move(lane), model.get());
    std::vector<SequenceKv> seqs(3);
    std::vector<int32_t> tok = {1, 2, 3};
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(seqs[i].reserve(*rig.cache, 64));
      const auto p = prompt(4 + 3 * i, i);
      const StepSeq s = step(seqs[i], p);
      rig.ex->run(std::span(&s, 1));
    }
    const SamplingParams greedy;
    for (int it = 0; it < 40; ++it) {
      std::vector<StepSeq> w;
      for (int i = 0; i < 3; ++i) w.push_back(step(seqs[i], std::span(&tok[i], 1), LogitRows::None, &greedy));
      const StepResult r = rig.ex->run(w);
      for (int i = 0; i < 3; ++i) out->push_back(tok[i] = r.seqs[i].token);
    }
  };
  std::vector<int32_t> alone, a, b;
  run(backends::default_runtime(Device::Cuda), &alone);
  std::thread ta([&] { run(backends::make_runtime(Device::Cuda), &a); });
  std::thread tb([&] { run(backends::make_runtime(Device::Cuda), &b); });
  ta.join();
  tb.join();
  EXPECT_EQ(a, alone);
  EXPECT_EQ(b, alone);
}

}  // namespace
}  // namespace kestrel
