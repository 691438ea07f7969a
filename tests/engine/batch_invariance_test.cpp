// Batch invariance on the CPU, as docs/server.md states it: a request's result (greedy text, logprobs,
// seeded samples) is the same bits whatever else is batched with it and however its prompt is chunked.
// Bottom up: every row of every matmul kernel and every query of attention are computed alone the same
// way as inside a batch (with the thread pool splitting the work), and end to end through the scheduler.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "../common/random_weights.h"
#include "../common/test_model.h"
#include "backends/backends.h"
#include "core/thread_pool.h"
#include "engine/scheduler.h"
#include "ops/dispatch.h"
#include "ops/ops.h"

namespace kestrel {
namespace {

TEST(BatchInvariance, EveryMatmulKernelComputesARowTheSameAloneAndInABatch) {
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int64_t K = 512, N = 300, M = 13;
  Tensor x = Tensor::empty_host(DType::F32, {M, K});
  for (int64_t i = 0; i < x.numel(); ++i) x.ptr<float>()[i] = nd(rng);
  for (DType t : testing::kWeightTypes) {
    const Tensor w = testing::random_weights(t, {N, K}, rng, 0.1f);
    for (const auto& v : ops::registries().matmul.variants()) {
      if (v.device != Device::Cpu) continue;
      Tensor y = Tensor::empty_host(DType::F32, {M, N});
      std::string why;
      if (!v.supports({x, w, y, nullptr}, &why)) continue;
      SCOPED_TRACE(v.name + " " + std::string(dtype_name(t)));
      const ops::Context ctx;
      v.run({x, w, y, nullptr}, ctx);
      for (int64_t m = 0; m < M; ++m) {
        const Tensor x1 = x.slice_rows(m, 1);
        Tensor y1 = Tensor::empty_host(DType::F32, {1, N});
        v.run({x1, w, y1, nullptr}, ctx);
        EXPECT_EQ(std::memcmp(y1.data, y.row(m), N * sizeof(float)), 0) << "row " << m;
      }
    }
  }
}

TEST(BatchInvariance, AttentionOfASequenceIsTheSameAloneAndInABatch) {
  std::mt19937 rng(2);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int64_t H = 8, Hkv = 2, D = 64, bs = 16, blocks = 160;
  ops::KvLayer cache{Tensor::empty_host(DType::F32, {blocks, bs, Hkv, D}),
                     Tensor::empty_host(DType::F32, {blocks, bs, Hkv, D})};
  for (Tensor* t : {&cache.k, &cache.v})
    for (int64_t i = 0; i < t->numel(); ++i) t->ptr<float>()[i] = nd(rng);
  // Sequences: (q_len, kv_len), each on its own blocks; long ones are split into several kv chunks.
  const std::vector<std::pair<int32_t, int32_t>> specs = {{1, 900}, {37, 300}, {1, 40}, {64, 1200}, {1, 2000}};
  std::vector<std::vector<int32_t>> tables;
  int32_t next_block = 0;
  int32_t rows = 0;
  ops::AttentionBatch all;
  all.scale = 0.125f;
  for (auto [q_len, kv_len] : specs) {
    std::vector<int32_t> t;
    for (int32_t b = 0; b < (kv_len + bs - 1) / bs; ++b) t.push_back(next_block++ % blocks);
    tables.push_back(std::move(t));
    all.seqs.push_back({rows, q_len, kv_len, nullptr});
    rows += q_len;
  }
  for (size_t i = 0; i < specs.size(); ++i) all.seqs[i].block_table = tables[i].data();
  Tensor q = Tensor::empty_host(DType::F32, {rows, H, D});
  for (int64_t i = 0; i < q.numel(); ++i) q.ptr<float>()[i] = nd(rng);
  ThreadPool pool(4);
  ops::Context ctx;
  ctx.pool = &pool;
  Tensor out = Tensor::empty_host(DType::F32, {rows, H, D});
  ops::attention(ctx, q, cache, all, out);
  for (size_t i = 0; i < specs.size(); ++i) {
    SCOPED_TRACE(i);
    const ops::AttentionSeq s = all.seqs[i];
    ops::AttentionBatch one;
    one.scale = all.scale;
    one.seqs = {{0, s.q_len, s.kv_len, s.block_table}};
    const Tensor qi = q.slice_rows(s.q_begin, s.q_len);
    Tensor oi = Tensor::empty_host(DType::F32, {s.q_len, H, D});
    for (ThreadPool* p : {&pool, static_cast<ThreadPool*>(nullptr)}) {  // threaded and on one thread
      ops::Context c;
      ThreadPool single(1);
      c.pool = p ? p : &single;
      ops::attention(c, qi, cache, one, oi);
      EXPECT_EQ(std::memcmp(oi.data, out.row(s.q_begin * H), oi.nbytes()), 0);
    }
  }
}

// 64 requests of varied lengths alone against all of them together with a small token budget (prompts
// chunked, decode rows and prefill chunks in the same steps), with and without asynchronous scheduling,
// and in a cache small enough to preempt and recompute requests; every eighth prompt extends the one
// before it, so batched runs also hit the prefix cache. The same tokens, the same logprob bits, the same
// seeded samples. Contexts past the attention's kv split size. On the CPU (Q4_1 weights, the default
// model's type, two threads) as every run is; on the GPU in batch-invariant mode
// (ops::Context::batch_invariant, --batch-invariant), bf16 weights and KV.
void expect_requests_invariant(Device device) {
  std::mt19937 rng(3);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 64; ++i) {
    std::vector<int32_t> p;
    if (i % 8 == 3) p = prompts.back();
    const size_t extra = 1 + rng() % (i % 4 == 0 ? 16 : 230);
    for (size_t j = 0; j < extra; ++j) p.push_back(1 + static_cast<int32_t>(rng() % (testing::kTinyVocab - 1)));
    prompts.push_back(p);
  }
  struct Out {
    std::vector<int32_t> tokens;
    std::vector<TokenLogprob> lps;
  };
  const bool gpu = device == Device::Cuda;
  SchedulerStats last;
  auto serve = [&](const std::vector<size_t>& which, int budget, int overlap, int blocks) {
    auto model = testing::tiny_decoder(11, 512, gpu ? 64 : 32, gpu ? DType::BF16 : DType::Q4_1);
    auto tok = testing::tiny_tokenizer();
    const ModelConfig& c = model->config();
    ThreadPool pool(2);
    ops::Context ctx = backends::make_context(device);
    ctx.pool = &pool;
    ctx.batch_invariant = true;
    model->place_on(ctx);
    KvCache cache(KvCacheConfig{.n_layers = c.n_layers,
                                .n_kv_heads = c.n_kv_heads,
                                .head_dim = c.head_dim,
                                .block_size = 16,
                                .num_blocks = blocks,
                                .format = KvFormat::plain(gpu ? DType::BF16 : DType::F32)},
                  ctx);
    Scheduler sched(*model, *tok, cache, ctx,
                    SchedulerOptions{.max_batch_tokens = budget, .n_ctx = 512, .overlap = overlap});
    std::vector<Out> out(prompts.size());
    for (size_t i : which) {
      auto r = std::make_shared<Request>();
      r->prompt = prompts[i];
      r->max_tokens = 12;
      r->ignore_eos = true;
      r->logprobs = 3;
      if (i % 2) r->sampling = {.temperature = 0.9f, .top_p = 0.95f, .seed = 100 + i};
      r->on_output = [&out, i](RequestOutput&& o) {
        out[i].tokens.insert(out[i].tokens.end(), o.tokens.begin(), o.tokens.end());
        out[i].lps.insert(out[i].lps.end(), o.logprobs.begin(), o.logprobs.end());
      };
      EXPECT_TRUE(sched.submit(r));
    }
    for (int guard = 0; guard < 100000 && sched.step(); ++guard) {
    }
    last = sched.stats();
    return out;
  };
  std::vector<Out> alone(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) alone[i] = serve({i}, 512, 0, 64)[i];
  std::vector<size_t> everyone(prompts.size());
  for (size_t i = 0; i < everyone.size(); ++i) everyone[i] = i;
  struct Run {
    int budget, overlap, blocks;
  };
  for (const Run run : {Run{97, 0, 4096}, Run{157, 1, 4096}, Run{97, 1, 40}}) {
    const auto batched = serve(everyone, run.budget, run.overlap, run.blocks);
    EXPECT_GT(last.prefix_cache_hit_tokens, 0u);
    if (run.blocks < 64) EXPECT_GT(last.preemptions, 0u) << "the small cache was to preempt";
    for (size_t i = 0; i < prompts.size(); ++i) {
      SCOPED_TRACE(::testing::Message() << "request " << i << " budget " << run.budget << " overlap " << run.overlap
                                        << " blocks " << run.blocks);
      ASSERT_EQ(batched[i].tokens, alone[i].tokens);
      ASSERT_EQ(batched[i].lps.size(), alone[i].lps.size());
      for (size_t j = 0; j < alone[i].lps.size(); ++j) {
        EXPECT_EQ(std::memcmp(&batched[i].lps[j].logprob, &alone[i].lps[j].logprob, sizeof(float)), 0);
        EXPECT_EQ(batched[i].lps[j].top, alone[i].lps[j].top);
      }
    }
  }
}

TEST(BatchInvariance, RequestsGiveTheSameBitsAloneAndBatched) {
  expect_requests_invariant(Device::Cpu);
}

TEST(BatchInvariance, RequestsGiveTheSameBitsAloneAndBatchedOnTheGpu) {
  if (!backends::available(Device::Cuda)) GTEST_SKIP() << "no CUDA device: the GPU's batch-invariant mode untested";
  expect_requests_invariant(Device::Cuda);
}

}  // namespace
}  // namespace kestrel
