// The continuous-batching scheduler on a tiny random model: batching, chunked prefill, preemption and
// prefix caching must not change greedy output; blocks must never leak; cancellation and queue limits.
#include "engine/scheduler.h"

#include <gtest/gtest.h>

#include <random>

#include "../common/test_model.h"
#include "engine/prefix_cache.h"
#include "engine/structured_output.h"
#include "structured/grammar.h"

namespace kestrel {
namespace {

using testing::tiny_decoder;
using testing::tiny_tokenizer;

struct Result {
  std::vector<int32_t> tokens;
  std::string text;
  FinishReason finish = FinishReason::None;
  int events = 0;
  int cached = 0;
};

struct Harness {
  std::unique_ptr<Decoder> model = tiny_decoder();
  std::unique_ptr<Tokenizer> tok = tiny_tokenizer();
  std::unique_ptr<KvCache> cache;
  std::unique_ptr<Scheduler> sched;

  explicit Harness(SchedulerOptions opt, int32_t num_blocks = 256, int block_size = 8) {
    const ModelConfig& c = model->config();
    cache = std::make_unique<KvCache>(KvCacheConfig{.n_layers = c.n_layers,
                                                    .n_kv_heads = c.n_kv_heads,
                                                    .head_dim = c.head_dim,
                                                    .block_size = block_size,
                                                    .num_blocks = num_blocks},
                                      ops::Context{});
    sched = std::make_unique<Scheduler>(*model, *tok, *cache, ops::Context{}, opt);
  }

  std::shared_ptr<Request> request(std::vector<int32_t> prompt, int max_tokens, Result& out) {
    auto r = std::make_shared<Request>();
    r->prompt = std::move(prompt);
    r->max_tokens = max_tokens;
    r->ignore_eos = true;
    r->on_output = [&out](RequestOutput&& o) {
      out.tokens.insert(out.tokens.end(), o.tokens.begin(), o.tokens.end());
      out.text += o.text;
      out.cached = o.cached_prompt_tokens;
      ++out.events;
      if (o.finish != FinishReason::None) out.finish = o.finish;
    };
    return r;
  }

  void run_to_completion() {
    for (int guard = 0; guard < 100000 && sched->step(); ++guard) {
    }
  }
};

std::vector<int32_t> random_prompt(std::mt19937& rng, int n) {
  std::uniform_int_distribution<int32_t> d(1, testing::kTinyVocab - 1);
  std::vector<int32_t> p(n);
  for (auto& t : p) t = d(rng);
  return p;
}

std::vector<Result> run_alone(const std::vector<std::vector<int32_t>>& prompts, int max_tokens) {
  std::vector<Result> out(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    Harness h(SchedulerOptions{.max_batch_tokens = 512, .n_ctx = 256}, 256, 8);
    EXPECT_TRUE(h.sched->submit(h.request(prompts[i], max_tokens, out[i])));
    h.run_to_completion();
  }
  return out;
}

TEST(SchedulerBatching, GreedyOutputIsTheSameAloneAndBatchedWith31Others) {
  std::mt19937 rng(11);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 32; ++i) prompts.push_back(random_prompt(rng, 3 + static_cast<int>(rng() % 40)));
  const auto alone = run_alone(prompts, 12);

  // A small token budget forces chunked prefill mixed with decode steps.
  Harness h(SchedulerOptions{.max_batch_tokens = 37, .max_running = 32, .n_ctx = 256}, 256, 8);
  std::vector<Result> batched(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) ASSERT_TRUE(h.sched->submit(h.request(prompts[i], 12, batched[i])));
  h.run_to_completion();
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(batched[i].tokens, alone[i].tokens) << "request " << i;
    EXPECT_EQ(batched[i].text, alone[i].text) << "request " << i;
    EXPECT_EQ(batched[i].finish, FinishReason::Length);
    EXPECT_EQ(batched[i].tokens.size(), 12u);
  }
  const SchedulerStats st = h.sched->stats();
  EXPECT_EQ(st.kv_blocks_in_use, 0);
  EXPECT_EQ(st.running, 0);
  EXPECT_EQ(st.waiting, 0);
  EXPECT_EQ(st.generated_tokens, 32u * 12u);
}

TEST(SchedulerPreemption, RunningOutOfBlocksPreemptsAndRecomputesWithoutChangingOutput) {
  std::mt19937 rng(5);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 8; ++i) prompts.push_back(random_prompt(rng, 20 + i));
  const auto alone = run_alone(prompts, 30);

  // 16 blocks of 4 = 64 tokens: one sequence fits, eight (~55 tokens each) do not.
  Harness h(SchedulerOptions{.max_batch_tokens = 64, .max_running = 8, .n_ctx = 64}, 16, 4);
  std::vector<Result> out(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) ASSERT_TRUE(h.sched->submit(h.request(prompts[i], 30, out[i])));
  h.run_to_completion();
  const SchedulerStats st = h.sched->stats();
  EXPECT_GT(st.preemptions, 0u);
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(out[i].tokens, alone[i].tokens) << "request " << i;
  EXPECT_EQ(st.kv_blocks_in_use, 0);
  EXPECT_EQ(st.kv_blocks_free + st.kv_blocks_cached, st.kv_blocks_total);
}

TEST(SchedulerPrefixCache, SharedPrefixIsComputedOnceAndOutputUnchanged) {
  std::mt19937 rng(3);
  const auto system = random_prompt(rng, 37);
  auto a = system, b = system;
  for (int32_t t : random_prompt(rng, 5)) a.push_back(t);
  for (int32_t t : random_prompt(rng, 9)) b.push_back(t);
  const auto alone = run_alone({a, b}, 10);

  Harness h(SchedulerOptions{.max_batch_tokens = 512, .n_ctx = 256}, 64, 8);
  Result ra, rb;
  ASSERT_TRUE(h.sched->submit(h.request(a, 10, ra)));
  h.run_to_completion();
  const SchedulerStats after_a = h.sched->stats();
  EXPECT_EQ(after_a.kv_blocks_in_use, 0);
  EXPECT_EQ(after_a.kv_blocks_cached, (42 + 10 - 1) / 8);  // every full block of a's tokens
  ASSERT_TRUE(h.sched->submit(h.request(b, 10, rb)));
  h.run_to_completion();
  EXPECT_EQ(ra.cached, 0);
  EXPECT_EQ(rb.cached, 32);  // the 4 full blocks of the shared 37-token prefix
  EXPECT_EQ(ra.tokens, alone[0].tokens);
  EXPECT_EQ(rb.tokens, alone[1].tokens);
  const SchedulerStats st = h.sched->stats();
  EXPECT_EQ(st.prefix_cache_hit_tokens, 32u);
  EXPECT_EQ(st.prompt_tokens_computed, 42u + 46u - 32u);
  EXPECT_EQ(st.kv_blocks_in_use, 0);
}

TEST(SchedulerPrefixCache, IdenticalConcurrentPromptsShareBlocksWhileRunning) {
  std::mt19937 rng(8);
  const auto p = random_prompt(rng, 33);
  Harness h(SchedulerOptions{.max_batch_tokens = 512, .n_ctx = 256}, 64, 8);
  Result r1, r2, r3;
  ASSERT_TRUE(h.sched->submit(h.request(p, 30, r1)));
  ASSERT_TRUE(h.sched->step());  // r1's prompt is in the cache now
  ASSERT_TRUE(h.sched->submit(h.request(p, 30, r2)));
  ASSERT_TRUE(h.sched->submit(h.request(p, 30, r3)));
  ASSERT_TRUE(h.sched->step());
  // Four full prompt blocks are shared by three sequences and the cache.
  for (int32_t blk = 0; blk < 4; ++blk) EXPECT_EQ(h.cache->blocks().ref_count(blk), 4) << "block " << blk;
  h.run_to_completion();
  EXPECT_EQ(r2.cached, 32);
  EXPECT_EQ(r1.tokens, r2.tokens);
  EXPECT_EQ(r1.tokens, r3.tokens);
  for (int32_t blk = 0; blk < 4; ++blk) EXPECT_EQ(h.cache->blocks().ref_count(blk), 1);
  EXPECT_EQ(h.sched->stats().kv_blocks_in_use, 0);
}

TEST(SchedulerCancel, CancelledRequestEndsAndFreesItsBlocks) {
  Harness h(SchedulerOptions{.n_ctx = 256});
  std::mt19937 rng(1);
  Result r;
  auto req = h.request(random_prompt(rng, 20), 200, r);
  ASSERT_TRUE(h.sched->submit(req));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(h.sched->step());
  EXPECT_GT(h.sched->stats().kv_blocks_in_use, 0);
  req->cancelled = true;
  h.sched->step();
  EXPECT_EQ(r.finish, FinishReason::Cancelled);
  EXPECT_EQ(h.sched->stats().kv_blocks_in_use, 0);
  EXPECT_EQ(h.sched->stats().running, 0);
  EXPECT_FALSE(h.sched->step());
}

TEST(SchedulerLimits, FullQueueRefusesAndBadRequestsThrow) {
  Harness h(SchedulerOptions{.max_running = 1, .max_waiting = 2, .n_ctx = 64});
  Result r1, r2, r3, r4, bad;
  // r1 takes the free running slot; r2 and r3 fill the queue.
  EXPECT_TRUE(h.sched->submit(h.request({1, 2, 3}, 4, r1)));
  EXPECT_TRUE(h.sched->submit(h.request({1, 2, 3}, 4, r2)));
  EXPECT_TRUE(h.sched->submit(h.request({1, 2, 3}, 4, r3)));
  EXPECT_FALSE(h.sched->submit(h.request({1, 2, 3}, 4, r4)));
  EXPECT_EQ(h.sched->stats().waiting, 3);
  EXPECT_THROW(h.sched->submit(h.request({}, 4, bad)), Error);
  EXPECT_THROW(h.sched->submit(h.request({1, 999}, 4, bad)), Error);
  EXPECT_THROW(h.sched->submit(h.request({1, 2}, 0, bad)), Error);
  EXPECT_THROW(h.sched->submit(h.request(std::vector<int32_t>(60, 1), 5, bad)), Error);
  h.run_to_completion();
  EXPECT_EQ(r1.finish, FinishReason::Length);
  EXPECT_EQ(r3.finish, FinishReason::Length);
  EXPECT_EQ(r4.events, 0);
  EXPECT_TRUE(h.sched->submit(h.request({1, 2, 3}, 4, r4)));
}

// Requests that free running slots will take at the next step are not queued: with no queue at all,
// a burst as large as the batch is still admitted, and only what must wait is refused.
TEST(SchedulerLimits, RequestsForFreeSlotsDoNotCountAgainstTheQueue) {
  Harness h(SchedulerOptions{.max_running = 4, .max_waiting = 0, .n_ctx = 64});
  Result r[6];
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(h.sched->submit(h.request({1, 2, 3}, 8, r[i]))) << i;
  EXPECT_FALSE(h.sched->submit(h.request({1, 2, 3}, 8, r[4])));
  h.sched->step();
  EXPECT_EQ(h.sched->stats().running, 4);
  EXPECT_EQ(h.sched->stats().waiting, 0);
  EXPECT_FALSE(h.sched->submit(h.request({1, 2, 3}, 8, r[4])));  // every slot is taken
  h.run_to_completion();
  for (int i = 0; i < 4; ++i) EXPECT_EQ(r[i].finish, FinishReason::Length) << i;
  EXPECT_TRUE(h.sched->submit(h.request({1, 2, 3}, 8, r[5])));
  h.run_to_completion();
  EXPECT_EQ(r[5].finish, FinishReason::Length);
}

TEST(SchedulerStops, StopTokenIdsAndStopStringsEndGeneration) {
  std::mt19937 rng(4);
  const auto prompt = random_prompt(rng, 12);
  const auto ref = run_alone({prompt}, 20)[0];
  ASSERT_EQ(ref.tokens.size(), 20u);

  Harness h(SchedulerOptions{.n_ctx = 256});
  Result by_id;
  auto r = h.request(prompt, 20, by_id);
  r->stop_token_ids = {ref.tokens[5]};
  ASSERT_TRUE(h.sched->submit(r));
  h.run_to_completion();
  EXPECT_EQ(by_id.finish, FinishReason::Stop);
  const auto first = std::find(ref.tokens.begin(), ref.tokens.end(), ref.tokens[5]) - ref.tokens.begin();
  EXPECT_EQ(by_id.tokens, std::vector<int32_t>(ref.tokens.begin(), ref.tokens.begin() + first + 1));

  // A stop string from the middle of the reference text: output is the text before it.
  ASSERT_GT(ref.text.size(), 8u);
  const std::string stop = ref.text.substr(4, 3);
  Result by_text;
  auto r2 = h.request(prompt, 20, by_text);
  r2->stop = {stop};
  ASSERT_TRUE(h.sched->submit(r2));
  h.run_to_completion();
  EXPECT_EQ(by_text.finish, FinishReason::Stop);
  EXPECT_EQ(by_text.text, ref.text.substr(0, ref.text.find(stop)));
}

TEST(SchedulerLogprobs, SampledTokenLogprobAndTopAlternatives) {
  Harness h(SchedulerOptions{.n_ctx = 256});
  std::vector<TokenLogprob> lps;
  std::vector<int32_t> toks;
  auto r = std::make_shared<Request>();
  r->prompt = {5, 6, 7};
  r->max_tokens = 3;
  r->ignore_eos = true;
  r->logprobs = 4;
  r->on_output = [&](RequestOutput&& o) {
    lps.insert(lps.end(), o.logprobs.begin(), o.logprobs.end());
    toks.insert(toks.end(), o.tokens.begin(), o.tokens.end());
  };
  ASSERT_TRUE(h.sched->submit(r));
  h.run_to_completion();
  ASSERT_EQ(lps.size(), 3u);
  for (size_t i = 0; i < lps.size(); ++i) {
    EXPECT_EQ(lps[i].token, toks[i]);
    ASSERT_EQ(lps[i].top.size(), 4u);
    // Greedy: the sampled token is the most likely one.
    EXPECT_EQ(lps[i].top[0].first, toks[i]);
    EXPECT_FLOAT_EQ(lps[i].top[0].second, lps[i].logprob);
    EXPECT_LE(lps[i].logprob, 0.f);
    for (size_t k = 1; k < 4; ++k) EXPECT_LE(lps[i].top[k].second, lps[i].top[k - 1].second);
  }
}

TEST(SchedulerSeed, SameSeedSameTokensAcrossBatching) {
  std::mt19937 rng(9);
  const auto prompt = random_prompt(rng, 10);
  auto sampled = [&](int others) {
    Harness h(SchedulerOptions{.max_batch_tokens = 16, .n_ctx = 256});
    std::vector<Result> out(static_cast<size_t>(others) + 1);
    for (int i = 0; i <= others; ++i) {
      auto r = h.request(i == 0 ? prompt : random_prompt(rng, 7), 15, out[i]);
      r->sampling.temperature = 0.9f;
      r->sampling.top_p = 0.95f;
      r->sampling.seed = 1234 + static_cast<uint64_t>(i);
      EXPECT_TRUE(h.sched->submit(r));
    }
    h.run_to_completion();
    return out[0].tokens;
  };
  EXPECT_EQ(sampled(0), sampled(5));
}

// Asynchronous scheduling (step N+1 planned and submitted before step N's tokens are read back) must not
// change any result. The CPU lane finishes work at submit, so overlap is forced on here to run the same
// bookkeeping the GPU uses: pending tokens fed from the previous step, finished sequences whose next
// step is already in flight, preemption only after draining, penalties waiting for their history, output
// constraints whose masks arrive after the step was submitted (Executor::supply_masks).
TEST(SchedulerOverlap, SameResultsAsWithoutOverlap) {
  std::mt19937 rng(21);
  struct Spec {
    std::vector<int32_t> prompt;
    int max_tokens;
    SamplingParams sampling;
    std::vector<std::string> stop;
    bool ignore_eos;
    int logprobs;
    std::optional<ConstraintSpec> constraint = {};
  };
  ConstraintCompiler constraints(*tiny_tokenizer(), testing::kTinyVocab);
  const ConstraintSpec kinds[] = {
      {ConstraintKind::Regex, "[a-z]{2,6}-[0-9]{1,4}"},
      {ConstraintKind::JsonSchema,
       R"({"type": "object", "properties": {"k": {"type": "integer", "minimum": 0, "maximum": 999},
           "v": {"type": "string", "maxLength": 6}}, "required": ["k", "v"]})"},
      {ConstraintKind::Choice, "", {"yes", "no", "maybe"}},
  };
  std::vector<Spec> specs;
  for (int i = 0; i < 24; ++i) {
    Spec sp{random_prompt(rng, 3 + static_cast<int>(rng() % 30)),
            4 + static_cast<int>(rng() % 20),
            {},
            {},
            i % 3 != 0,
            i % 5 == 0 ? 2 : -1};
    if (i % 4 == 1) sp.sampling = {.temperature = 0.8f, .top_k = 20, .seed = static_cast<uint64_t>(i)};
    if (i % 4 == 2)
      sp.sampling = {
          .temperature = 0.7f, .repetition_penalty = 1.3f, .frequency_penalty = 0.2f, .seed = static_cast<uint64_t>(i)};
    if (i % 6 == 3) sp.stop = {"a"};
    if (i % 7 >= 4) {
      sp.constraint = kinds[i % 7 - 4];
      sp.sampling = {.temperature = 1.f, .seed = static_cast<uint64_t>(i)};
      sp.max_tokens = 30;
      sp.prompt.resize(std::min<size_t>(sp.prompt.size(), 30));
    }
    specs.push_back(sp);
  }
  auto serve = [&](int overlap, bool cancel_one) {
    // 40 blocks of 4 = 160 tokens: far fewer than 24 sequences need, so some are preempted.
    Harness h(SchedulerOptions{.max_batch_tokens = 48, .max_running = 16, .n_ctx = 64, .overlap = overlap}, 40, 4);
    std::vector<Result> out(specs.size());
    std::vector<std::shared_ptr<Request>> reqs;
    for (size_t i = 0; i < specs.size(); ++i) {
      auto r = h.request(specs[i].prompt, specs[i].max_tokens, out[i]);
      r->sampling = specs[i].sampling;
      r->stop = specs[i].stop;
      r->ignore_eos = specs[i].ignore_eos;
      r->logprobs = specs[i].logprobs;
      if (specs[i].constraint) r->constraint = constraints.compile(*specs[i].constraint);
      reqs.push_back(r);
      EXPECT_TRUE(h.sched->submit(r));
    }
    for (int guard = 0; guard < 100000 && h.sched->step(); ++guard)
      if (cancel_one && guard == 7) reqs[3]->cancelled = true;
    const SchedulerStats st = h.sched->stats();
    EXPECT_EQ(st.kv_blocks_in_use, 0) << "overlap " << overlap;
    EXPECT_EQ(st.running + st.waiting, 0);
    if (overlap) EXPECT_GT(st.preemptions, 0u);
    return out;
  };
  const auto sync = serve(0, false), async = serve(1, false);
  int completed = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    EXPECT_EQ(async[i].tokens, sync[i].tokens) << "request " << i;
    EXPECT_EQ(async[i].text, sync[i].text) << "request " << i;
    EXPECT_EQ(async[i].finish, sync[i].finish) << "request " << i;
    if (!specs[i].constraint) continue;
    // A constrained answer is a complete match when it stopped, a prefix of one when it ran out of tokens.
    const auto g = structured::compile_gbnf(constraint_grammar(*specs[i].constraint));
    if (sync[i].finish == FinishReason::Stop) {
      EXPECT_TRUE(structured::grammar_accepts(*g, sync[i].text)) << "request " << i << ": " << sync[i].text;
      ++completed;
    } else {
      EXPECT_TRUE(structured::grammar_accepts_prefix(*g, sync[i].text)) << "request " << i << ": " << sync[i].text;
    }
  }
  EXPECT_GE(completed, 3);
  const auto cancelled = serve(1, true);
  EXPECT_EQ(cancelled[3].finish, FinishReason::Cancelled);
  for (size_t i = 0; i < specs.size(); ++i)
    if (i != 3) EXPECT_EQ(cancelled[i].tokens, sync[i].tokens) << "request " << i;
}

// A prefill chunk cap while others decode spreads prompts over more steps; the output stays the same.
TEST(SchedulerPrefillChunk, BoundsPrefillWhileDecodingWithoutChangingOutput) {
  std::mt19937 rng(17);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 10; ++i) prompts.push_back(random_prompt(rng, 20 + static_cast<int>(rng() % 30)));
  auto serve = [&](int chunk, uint64_t* steps, double max_wait_ms = -1) {
    Harness h(SchedulerOptions{
        .max_batch_tokens = 128, .prefill_chunk = chunk, .prefill_chunk_max_wait_ms = max_wait_ms, .n_ctx = 256});
    std::vector<Result> out(prompts.size());
    EXPECT_TRUE(h.sched->submit(h.request(prompts[0], 16, out[0])));
    EXPECT_TRUE(h.sched->step());  // the first prompt decodes from now on, while the rest arrive
    for (size_t i = 1; i < prompts.size(); ++i) EXPECT_TRUE(h.sched->submit(h.request(prompts[i], 16, out[i])));
    h.run_to_completion();
    *steps = h.sched->stats().steps;
    std::vector<std::vector<int32_t>> tokens;
    for (const Result& r : out) tokens.push_back(r.tokens);
    return tokens;
  };
  uint64_t whole = 0, chunked = 0;
  const auto a = serve(0, &whole), b = serve(6, &chunked);
  EXPECT_EQ(a, b);
  // 9 prompts of ~35 tokens in chunks of at most 6 while the first decodes: many more steps.
  EXPECT_GT(chunked, whole + 20);

  // A backlog lifts the cap: with no wait allowed, every step that finds a request queued takes the whole
  // budget, so the prompts go in about as few steps as uncapped; a wait no request reaches keeps the cap.
  uint64_t lifted = 0, kept = 0;
  EXPECT_EQ(serve(6, &lifted, 0), a);
  EXPECT_EQ(serve(6, &kept, 1e9), a);
  EXPECT_LT(lifted, chunked - 20);
  EXPECT_EQ(kept, chunked);
}

TEST(PrefixCacheUnit, MatchInsertEvictAndReferenceCounts) {
  BlockAllocator blocks(8);
  PrefixCache pc(blocks, 2);
  const std::vector<int32_t> toks = {1, 2, 3, 4, 5};
  const uint64_t h0 = PrefixCache::hash_block(PrefixCache::kRootHash, std::span(toks).subspan(0, 2));
  const uint64_t h1 = PrefixCache::hash_block(h0, std::span(toks).subspan(2, 2));
  EXPECT_NE(h0, h1);
  EXPECT_TRUE(pc.match(toks, 2).empty());

  const int32_t b0 = *blocks.allocate(), b1 = *blocks.allocate();
  pc.insert(PrefixCache::kRootHash, h0, 0, std::span(toks).subspan(0, 2), b0);
  pc.insert(h0, h1, 1, std::span(toks).subspan(2, 2), b1);
  pc.insert(h0, h1, 1, std::span(toks).subspan(2, 2), b1);  // known content: no second reference
  EXPECT_EQ(blocks.ref_count(b0), 2);
  EXPECT_EQ(blocks.ref_count(b1), 2);
  EXPECT_EQ(pc.evictable(), 0);

  auto hit = pc.match(toks, 2);
  EXPECT_EQ(hit, (std::vector<int32_t>{b0, b1}));
  EXPECT_EQ(blocks.ref_count(b0), 3);
  EXPECT_EQ(pc.match(toks, 1).size(), 1u);  // max_blocks caps the match
  blocks.release(b0);
  // Same second block after a different first block: no match past the first miss.
  EXPECT_TRUE(pc.match(std::vector<int32_t>{9, 9, 3, 4}, 2).empty());

  for (int32_t b : hit) blocks.release(b);
  blocks.release(b0);
  blocks.release(b1);  // the sequences are gone; only the cache holds them
  EXPECT_EQ(pc.evictable(), 2);
  EXPECT_EQ(pc.evict(1), 1);  // the chain's end goes first
  EXPECT_EQ(blocks.ref_count(b1), 0);
  EXPECT_EQ(pc.match(toks, 2), std::vector<int32_t>{b0});
  blocks.release(b0);
  EXPECT_EQ(pc.evict(5), 1);
  EXPECT_EQ(pc.size(), 0);
  EXPECT_EQ(blocks.num_free(), 8);
}

}  // namespace
}  // namespace kestrel
