#include "engine/scheduler.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/error.h"
#include "core/log.h"
#include "engine/generate.h"

namespace kestrel {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::Stop: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::Cancelled: return "cancelled";
    case FinishReason::Error: return "error";
    case FinishReason::None: break;
  }
  return "";
}

struct Scheduler::Sequence {
  std::shared_ptr<Request> req;
  uint64_t order = 0;           // arrival rank: larger is younger
  std::vector<int32_t> tokens;  // prompt, then generated tokens (the newest not yet in the cache)
  int32_t n_prompt = 0;
  SequenceKv kv;  // kv.length() tokens have K/V in the cache
  StreamDecoder decoder;
  StopMatcher stops;
  std::vector<uint64_t> hashes;  // chain hashes of the full blocks of `tokens` known so far
  int32_t n_registered = 0;      // leading full blocks offered to the prefix cache
  bool admitted_once = false;
  FinishReason finish = FinishReason::None;
  RequestOutput out;  // what the next event carries
  // Asynchronous scheduling: tokens sampled by steps still in flight (not yet in `tokens`); the index of
  // this sequence in the last submitted step (where a pending token comes from); and an epoch bumped when
  // the sequence is preempted or retired, so results of steps submitted before are dropped.
  int32_t pending = 0;
  int last_index = -1;
  uint64_t epoch = 0;
  uint32_t grammar_state = 0;  // with a constraint: its state after the tokens generated so far

  Sequence(std::shared_ptr<Request> r, const Tokenizer& tok)
      : req(std::move(r)), decoder(tok, /*skip_special=*/true), stops(req->stop, req->include_stop_str) {}
  int32_t n_generated() const { return static_cast<int32_t>(tokens.size()) - n_prompt; }
  // Positions still to run through the model, the pending sampled token included.
  int32_t n_uncomputed() const { return static_cast<int32_t>(tokens.size()) + pending - kv.length(); }
  // Whether the tokens already sampled (pending ones included) complete the request's length.
  bool length_reached(int n_ctx) const {
    return n_generated() + pending >= req->max_tokens || static_cast<int>(tokens.size()) + pending >= n_ctx;
  }
};

// A submitted step: its sequences in StepSeq order, and the sequences retired while it was in flight
// (kept alive until it is collected, since its entries point at them).
struct Scheduler::InFlight {
  struct Entry {
    Sequence* s;
    int32_t chunk;
    uint64_t epoch;
    bool samples;
    bool mask_later;  // its mask is supplied once the previous step's token is known (supply_masks())
  };
  std::vector<Entry> entries;
  bool decode_only = false;
  std::vector<SeqPtr> dead;
};

Scheduler::Scheduler(Decoder& model, const Tokenizer& tokenizer, KvCache& cache, ops::Context ctx,
                     const SchedulerOptions& opt)
    : model_(&model),
      tok_(&tokenizer),
      cache_(&cache),
      ctx_(std::move(ctx)),
      opt_(opt),
      prefix_(cache.blocks(), cache.block_size()) {
  if (opt_.n_ctx <= 0) opt_.n_ctx = model.config().max_ctx > 0 ? model.config().max_ctx : 4096;
  KS_CHECK(opt_.max_batch_tokens >= 1 && opt_.max_running >= 1 && opt_.max_waiting >= 0,
           "scheduler limits must be positive (batch tokens {}, running {}, waiting {})", opt_.max_batch_tokens,
           opt_.max_running, opt_.max_waiting);
  ExecutorOptions eo;
  eo.max_step_tokens = opt_.max_batch_tokens;
  eo.max_seqs = std::min(opt_.max_running, opt_.max_batch_tokens);
  eo.max_kv_len = opt_.n_ctx;
  executor_ = std::make_unique<Executor>(model, cache, ctx_, eo);
  executor_->capture_graphs();  // all buckets now, so steps planned behind a running one can replay them
  overlap_ = opt_.overlap < 0 ? executor_->context().lane().asynchronous() : opt_.overlap > 0;
  const int64_t capacity = int64_t{cache.blocks().num_free()} * cache.block_size();
  // One sequence alone must always fit, or preemption could not guarantee progress.
  KS_CHECK(capacity >= opt_.n_ctx,
           "the KV cache holds {} tokens but one sequence may need {}; add KV blocks or lower "
           "the context size",
           capacity, opt_.n_ctx);
  publish_stats();
}

Scheduler::~Scheduler() {
  // Nothing of a step in flight is needed any more; the executor waits for the lane when it goes.
  // Blocks go back to the allocator (which outlives us) so a reused cache starts clean.
  for (auto& s : running_) s->kv.release(*cache_);
  for (auto& s : waiting_) s->kv.release(*cache_);
}

bool Scheduler::submit(std::shared_ptr<Request> r) {
  KS_CHECK(r != nullptr, "null request");
  KS_CHECK(!r->prompt.empty(), "the prompt is empty");
  const int32_t vocab = static_cast<int32_t>(model_->config().vocab);
  for (int32_t t : r->prompt)
    KS_CHECK(t >= 0 && t < vocab, "prompt token {} is outside the vocabulary (size {})", t, vocab);
  KS_CHECK(r->max_tokens >= 1, "max_tokens must be at least 1, got {}", r->max_tokens);
  const int64_t need = static_cast<int64_t>(r->prompt.size()) + r->max_tokens;
  KS_CHECK(need <= opt_.n_ctx, "the prompt ({} tokens) plus max_tokens ({}) exceeds the context of {} tokens",
           r->prompt.size(), r->max_tokens, opt_.n_ctx);
  KS_CHECK(r->logprobs <= 20, "at most 20 top logprobs, got {}", r->logprobs);
  r->sampling.validate();
  KS_CHECK(!r->constraint || r->constraint->vocabulary().size() == vocab,
           "the output constraint was compiled for {} tokens; the model has {}",
           r->constraint ? r->constraint->vocabulary().size() : 0, vocab);
  auto s = std::make_unique<Sequence>(r, *tok_);
  if (r->constraint) s->grammar_state = r->constraint->start();
  s->tokens = r->prompt;
  s->n_prompt = static_cast<int32_t>(r->prompt.size());
  s->out.prompt_tokens = s->n_prompt;
  {
    std::lock_guard lock(mutex_);
    // Only requests that must wait count against the queue: as many as there are free running slots
    // will be admitted at the next step (stats_.waiting counts incoming_ too).
    const int free_slots = std::max(0, opt_.max_running - stats_.running);
    if (stats_.waiting - free_slots >= opt_.max_waiting) return false;
    incoming_.push_back(std::move(s));
    ++stats_.waiting;
  }
  cv_.notify_one();
  return true;
}

void Scheduler::wake() {
  {
    std::lock_guard lock(mutex_);
    woken_ = true;
  }
  cv_.notify_one();
}

void Scheduler::stop() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  cv_.notify_one();
}

void Scheduler::cancel_all() {
  {
    std::lock_guard lock(mutex_);
    cancel_all_ = true;
  }
  cv_.notify_one();
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void Scheduler::run() {
  while (true) {
    bool worked = false;
    try {
      worked = step();
    } catch (const std::exception& e) {
      // step() only throws when the model itself fails; the affected requests already got their final
      // event, so keep serving the rest.
      log::error("engine step failed: {}", e.what());
    }
    std::unique_lock lock(mutex_);
    if (stop_) return;
    if (worked) continue;
    cv_.wait(lock, [&] { return stop_ || woken_ || cancel_all_ || !incoming_.empty(); });
    woken_ = false;
    if (stop_) return;
  }
}

void Scheduler::take_incoming() {
  std::vector<SeqPtr> fresh;
  bool cancel = false;
  {
    std::lock_guard lock(mutex_);
    fresh.swap(incoming_);
    cancel = cancel_all_;
    cancel_all_ = false;
  }
  for (auto& s : fresh) {
    s->order = next_order_++;
    waiting_.push_back(std::move(s));
  }
  if (cancel) {
    for (auto& s : waiting_) s->req->cancelled = true;
    for (auto& s : running_) s->req->cancelled = true;
  }
}

void Scheduler::retire(SeqPtr s) {
  release(*s);
  ++s->epoch;
  if (!inflight_.empty()) inflight_.back().dead.push_back(std::move(s));
}

void Scheduler::drop_cancelled() {
  auto drop = [&](auto& list) {
    for (auto it = list.begin(); it != list.end();) {
      if ((*it)->req->cancelled) {
        finish(**it, FinishReason::Cancelled);
        emit(**it);
        retire(std::move(*it));
        it = list.erase(it);
      } else {
        ++it;
      }
    }
  };
  drop(waiting_);
  drop(running_);
}

bool Scheduler::reserve(Sequence& s, int32_t length) {
  const int32_t bs = cache_->block_size();
  const int32_t need = (length + bs - 1) / bs - static_cast<int32_t>(s.kv.block_table().size());
  const int32_t short_by = need - cache_->blocks().num_free();
  if (short_by > 0) prefix_.evict(short_by);
  if (s.kv.reserve(*cache_, length)) return true;
  // Windowed formats: the open pool may be what ran short (sink blocks the prefix cache keeps).
  while (cache_->blocks().num_ids() > cache_->blocks().num_total() && prefix_.evict(1) > 0)
    if (s.kv.reserve(*cache_, length)) return true;
  return false;
}

void Scheduler::release(Sequence& s) {
  // Its registered blocks stay in the prefix cache; mark them recently used so that a follow-up request
  // (the next chat turn) still finds them. A step in flight may still write the freed blocks: every step
  // runs in order on the executor's lane, so whoever gets them next writes after it.
  prefix_.touch(std::span(s.hashes).first(static_cast<size_t>(s.n_registered)));
  s.kv.release(*cache_);
  s.n_registered = 0;
}

void Scheduler::preempt(SeqPtr s) {
  ++preemptions_;
  log::debug("preempting request {} ({} tokens) to free KV blocks", s->order, s->tokens.size());
  release(*s);
  ++s->epoch;
  s->pending = 0;  // none: preemption waits for steps in flight
  const auto at = std::find_if(waiting_.begin(), waiting_.end(), [&](const SeqPtr& w) { return w->order > s->order; });
  waiting_.insert(at, std::move(s));
}

void Scheduler::admit_prefix(Sequence& s) {
  if (!opt_.prefix_cache || s.kv.length() > 0) return;
  // Keep at least one token to compute: its logits are where sampling starts.
  // Windowed KV formats share only blocks a fresh prefill of this prompt would not hold in full precision.
  const int32_t max_blocks = std::min((static_cast<int32_t>(s.tokens.size()) - 1) / cache_->block_size(),
                                      cache_->shareable_prefix_blocks(static_cast<int32_t>(s.tokens.size())));
  std::vector<int32_t> hit = prefix_.match(s.tokens, max_blocks);
  if (hit.empty()) return;
  const int32_t n = static_cast<int32_t>(hit.size());
  s.kv.adopt_prefix(*cache_, std::move(hit));
  extend_hashes(s, n);
  s.n_registered = n;  // they are the cache's own blocks
  if (!s.admitted_once) {
    s.out.cached_prompt_tokens = std::min(s.kv.length(), s.n_prompt);
    hit_tokens_ += static_cast<uint64_t>(s.kv.length());
  }
}

void Scheduler::extend_hashes(Sequence& s, int32_t n_blocks) {
  const size_t bs = static_cast<size_t>(cache_->block_size());
  while (static_cast<int32_t>(s.hashes.size()) < n_blocks) {
    const size_t i = s.hashes.size();
    const uint64_t parent = i == 0 ? PrefixCache::kRootHash : s.hashes[i - 1];
    s.hashes.push_back(PrefixCache::hash_block(parent, std::span(s.tokens).subspan(i * bs, bs)));
  }
}

void Scheduler::register_full_blocks(Sequence& s) {
  const int32_t bs = cache_->block_size();
  // Positions whose token is known: the K/V of a pending token may be computed already, its value not.
  int32_t full = std::min(s.kv.length(), static_cast<int32_t>(s.tokens.size())) / bs;
  // Batch-invariant mode shares prompt blocks only: a generated token's K/V came from the decode kernel,
  // and a later request whose prompt holds that text must get what the prefill kernel gives it.
  if (ctx_.batch_invariant) full = std::min(full, s.n_prompt / bs);
  full = std::min(full, s.kv.shareable_blocks());  // no open window block: its sealed form comes later
  extend_hashes(s, full);
  if (!opt_.prefix_cache) return;
  for (; s.n_registered < full; ++s.n_registered) {
    const size_t i = static_cast<size_t>(s.n_registered);
    prefix_.insert(i == 0 ? PrefixCache::kRootHash : s.hashes[i - 1], s.hashes[i], s.n_registered,
                   std::span(s.tokens).subspan(i * bs, bs), s.kv.block_table()[i]);
  }
}

void Scheduler::accept_token(Sequence& s, const SeqResult& res) {
  const Request& r = *s.req;
  const int32_t tok = res.token;
  if (r.logprobs >= 0) s.out.logprobs.push_back(res.logprob);
  s.tokens.push_back(tok);
  s.out.tokens.push_back(tok);
  s.out.completion_tokens = s.n_generated();
  ++generated_;

  bool constraint_done = false;
  if (r.constraint) {
    // The mask only offers allowed tokens; a token outside it means the sampler failed (all logits -inf).
    s.grammar_state = r.constraint->next(s.grammar_state, tok);
    if (s.grammar_state == structured::Automaton::kDead) {
      log::error("request {}: token {} is not allowed by its output constraint", s.order, tok);
      finish(s, FinishReason::Error);
      return;
    }
    // An end-of-generation token is only offered where the output is complete: it ends it even with
    // ignore_eos. A complete output that allows nothing more ends here without one.
    if (tok_->is_eog(tok)) {
      finish(s, FinishReason::Stop);
      return;
    }
    constraint_done = r.constraint->finished(s.grammar_state);
  }
  const bool stop_token = std::find(r.stop_token_ids.begin(), r.stop_token_ids.end(), tok) != r.stop_token_ids.end();
  if (stop_token || (!r.ignore_eos && tok_->is_eog(tok))) {
    finish(s, FinishReason::Stop);
    return;
  }
  s.out.text += s.stops.push(s.decoder.push(tok));
  if (s.stops.stopped() || constraint_done) {
    finish(s, FinishReason::Stop);
    return;
  }
  if (s.n_generated() >= r.max_tokens || static_cast<int>(s.tokens.size()) >= opt_.n_ctx)
    finish(s, FinishReason::Length);
}

void Scheduler::finish(Sequence& s, FinishReason why) {
  if (s.finish != FinishReason::None) return;
  s.finish = why;
  // Text still held back (an incomplete character, a possible stop-string prefix) is final now.
  if (why == FinishReason::Stop || why == FinishReason::Length)
    s.out.text += s.stops.push(s.decoder.flush()) + s.stops.flush();
}

void Scheduler::emit(Sequence& s) {
  if (s.out.tokens.empty() && s.finish == FinishReason::None) return;
  s.out.finish = s.finish;
  RequestOutput ev = s.out;
  s.out.text.clear();
  s.out.tokens.clear();
  s.out.logprobs.clear();
  events_.emplace_back(s.req, std::move(ev));
}

void Scheduler::publish_and_deliver() {
  // Stats first: a client that has seen its last event also sees its blocks freed in /metrics.
  publish_stats();
  std::vector<std::pair<std::shared_ptr<Request>, RequestOutput>> events;
  events.swap(events_);
  for (auto& [req, ev] : events)
    if (req->on_output) req->on_output(std::move(ev));
}

int32_t Scheduler::chunk_cap(const Sequence& s) const {
  const int32_t len = s.kv.length();
  if (!ctx_.batch_invariant) return s.n_uncomputed();
  // Batch-invariant mode: generated tokens computed again (after a preemption) go one per step as decode
  // rows, as they first went, and a chunk never mixes prompt and generated tokens: on the GPU the decode
  // and prefill attention kernels round differently, so a token's kernel must not depend on the history.
  return len < s.n_prompt ? std::min(s.n_uncomputed(), s.n_prompt - len) : 1;
}

bool Scheduler::backlogged() const {
  if (opt_.prefill_chunk_max_wait_ms < 0 || waiting_.empty()) return false;
  const auto waited = std::chrono::steady_clock::now() - waiting_.front()->req->arrival;
  return std::chrono::duration<double, std::milli>(waited).count() >= opt_.prefill_chunk_max_wait_ms;
}

std::optional<std::vector<Scheduler::Planned>> Scheduler::schedule(bool may_preempt) {
  // 1. Running sequences, oldest first: each gets its decode token or next prefill chunk. When blocks run
  // out, the youngest running sequence is preempted (possibly the one asking) — only with no step in
  // flight; otherwise the caller collects it first and asks again.
  int budget = opt_.max_batch_tokens;
  const bool decoding = std::any_of(running_.begin(), running_.end(), [&](const SeqPtr& s) {
    return s->n_uncomputed() == 1 && !s->length_reached(opt_.n_ctx);
  });
  int prefill_left = decoding && opt_.prefill_chunk > 0 && !backlogged() ? opt_.prefill_chunk : budget;
  std::vector<Planned> plan;
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Sequence& s = *running_[i];
    const bool prefill = s.n_uncomputed() > 1;
    // Its last token in flight (it finishes when that is collected), or no prefill room left this step.
    if (s.length_reached(opt_.n_ctx) || (prefill && prefill_left == 0)) {
      ++i;
      continue;
    }
    const int32_t chunk = std::min({chunk_cap(s), budget, prefill ? prefill_left : budget});
    bool preempted_self = false;
    while (!reserve(s, s.kv.length() + chunk)) {
      if (!may_preempt) return std::nullopt;
      SeqPtr victim = std::move(running_.back());
      running_.pop_back();
      preempted_self = victim.get() == &s;
      preempt(std::move(victim));
      if (preempted_self) break;
    }
    if (preempted_self) break;
    plan.push_back({&s, chunk});
    budget -= chunk;
    if (prefill) prefill_left -= chunk;
    ++i;
  }

  // 2. Waiting sequences, oldest first, while the budget, the batch size and the blocks allow.
  while (budget > 0 && prefill_left > 0 && !waiting_.empty() && static_cast<int>(running_.size()) < opt_.max_running) {
    Sequence& s = *waiting_.front();
    admit_prefix(s);
    const int32_t chunk = std::min({chunk_cap(s), budget, prefill_left});
    if (!reserve(s, s.kv.length() + chunk)) {
      release(s);  // don't sit on prefix blocks while waiting
      break;
    }
    s.admitted_once = true;
    plan.push_back({&s, chunk});
    budget -= chunk;
    prefill_left -= chunk;
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
  std::sort(running_.begin(), running_.end(), [](const SeqPtr& a, const SeqPtr& b) { return a->order < b->order; });
  return plan;
}

bool Scheduler::submit(const std::vector<Planned>& plan) {
  // A sequence whose chunk completes its tokens samples its next token on the device; the penalties count
  // its generated tokens, the draw index is the new token's position. A decode row whose input token is
  // still in flight takes it from the previous step on the device.
  static constexpr int32_t kPlaceholder = 0;
  std::vector<StepSeq> work;
  std::vector<std::shared_ptr<const structured::TokenMask>> masks;  // alive until the executor staged them
  InFlight st;
  work.reserve(plan.size());
  st.decode_only = true;
  for (auto [s, chunk] : plan) {
    StepSeq w;
    w.kv = &s->kv;
    w.prompt = s->kv.length() < s->n_prompt;
    if (s->pending > 0) {
      w.tokens = std::span(&kPlaceholder, 1);
      w.prev_index = s->last_index;
    } else {
      w.tokens = std::span(s->tokens).subspan(static_cast<size_t>(s->kv.length()), chunk);
    }
    const bool samples = s->kv.length() + chunk == static_cast<int32_t>(s->tokens.size()) + s->pending;
    if (samples) {
      w.sampling = &s->req->sampling;
      w.history = std::span(s->tokens).subspan(static_cast<size_t>(s->n_prompt));
      w.draw = static_cast<uint64_t>(s->kv.length() + chunk);
      w.generated = s->kv.length() + chunk - s->n_prompt;  // pending tokens included
      w.top_logprobs = s->req->logprobs;
      if (s->req->constraint) {
        // The mask follows every sampled token: with one still in flight it comes after the previous
        // step is collected (supply_masks()), while this step's forward runs.
        if (s->pending > 0) {
          w.mask_later = true;
        } else {
          masks.push_back(s->req->constraint->mask(s->grammar_state));
          w.allowed = *masks.back();
        }
      }
    }
    work.push_back(w);
    st.entries.push_back({s, chunk, s->epoch, samples, w.mask_later});
    st.decode_only &= chunk == 1;
    if (s->kv.length() < s->n_prompt)
      computed_prompt_tokens_ += static_cast<uint64_t>(std::min(chunk, s->n_prompt - s->kv.length()));
  }
  try {
    executor_->submit(work);
  } catch (...) {
    for (auto [s, chunk] : plan) s->req->cancelled = true;
    for (auto [s, chunk] : plan) s->finish = FinishReason::Error;
    drop_cancelled();
    publish_and_deliver();
    throw;
  }
  for (size_t i = 0; i < st.entries.size(); ++i) {
    Sequence& s = *st.entries[i].s;
    s.last_index = static_cast<int>(i);
    s.pending += st.entries[i].samples;
  }
  inflight_.push_back(std::move(st));
  return true;
}

void Scheduler::finish_inflight(bool deliver) {
  InFlight st = std::move(inflight_.front());
  inflight_.pop_front();
  const auto wait0 = std::chrono::steady_clock::now();
  const StepResult res = executor_->collect();
  wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - wait0).count();
  ++steps_;
  const auto now = std::chrono::steady_clock::now();
  // The step's share of the engine's time: from the previous step's results to its own while the engine
  // was busy (steps overlap), its own wall time otherwise.
  const double period = std::chrono::duration<double>(now - last_collect_).count();
  last_collect_ = now;
  StepTimes& times = st.decode_only ? decode_times_ : mixed_times_;
  ++times.steps;
  times.rows += st.entries.size();
  times.seconds += std::min(period, res.ms / 1e3);
  times.device_seconds += res.device_ms / 1e3;

  // Sample where a sequence has caught up with its tokens, report, retire finished ones. A sequence whose
  // inputs were bad fails alone (its K/V are incomplete, so none of its blocks are shared).
  for (size_t i = 0; i < st.entries.size(); ++i) {
    const InFlight::Entry& e = st.entries[i];
    Sequence& s = *e.s;
    if (s.epoch != e.epoch) continue;  // preempted or retired since
    s.pending -= e.samples;
    if (!res.seqs[i].error.empty()) {
      log::error("request {} failed: {}", s.order, res.seqs[i].error);
      finish(s, FinishReason::Error);
      emit(s);
      continue;
    }
    register_full_blocks(s);
    if (e.samples) accept_token(s, res.seqs[i]);
    emit(s);
  }
  for (auto it = running_.begin(); it != running_.end();) {
    if ((*it)->finish != FinishReason::None) {
      retire(std::move(*it));
      it = running_.erase(it);
    } else {
      ++it;
    }
  }
  if (deliver) publish_and_deliver();
}

bool Scheduler::host_state_pending() const {
  return std::any_of(running_.begin(), running_.end(),
                     [](const SeqPtr& s) { return s->pending > 0 && s->req->sampling.penalties(); });
}

void Scheduler::supply_masks() {
  if (inflight_.empty() || !executor_->awaiting_masks()) return;
  // The previous step is collected: each constrained sequence's state includes its last token. One that
  // finished meanwhile gets an empty mask (its draw is dropped).
  std::vector<std::shared_ptr<const structured::TokenMask>> hold;
  std::vector<std::span<const uint32_t>> masks;
  const size_t words = (static_cast<size_t>(model_->config().vocab) + 31) / 32;
  if (no_tokens_.size() != words) no_tokens_.assign(words, 0u);
  for (const InFlight::Entry& e : inflight_.back().entries) {
    if (!e.mask_later) continue;
    const Sequence& s = *e.s;
    if (s.epoch != e.epoch || s.finish != FinishReason::None || s.pending != 1) {
      masks.emplace_back(no_tokens_);
      continue;
    }
    hold.push_back(s.req->constraint->mask(s.grammar_state));
    masks.emplace_back(*hold.back());
  }
  executor_->supply_masks(masks);
}

bool Scheduler::step() {
  const auto t0 = std::chrono::steady_clock::now();
  const double wait0 = wait_seconds_;
  const bool worked = step_once();
  if (worked)
    host_seconds_ +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() - (wait_seconds_ - wait0);
  return worked;
}

bool Scheduler::step_once() {
  take_incoming();
  // Penalties count the tokens the host knows: such a sequence gets its pending token back before its next
  // step is planned. Its events go out once that step is launched.
  if (!inflight_.empty() && host_state_pending()) finish_inflight(/*deliver=*/false);
  drop_cancelled();
  std::optional<std::vector<Planned>> plan = schedule(/*may_preempt=*/inflight_.empty());
  if (!plan) {  // preemption needed: not while a step may still use the victim's blocks' contents
    while (!inflight_.empty()) finish_inflight();
    drop_cancelled();
    plan = schedule(true);
  }
  if (plan->empty()) {
    if (!inflight_.empty()) {
      finish_inflight();
      return true;
    }
    publish_and_deliver();  // events of cancelled requests
    return false;
  }
  submit(*plan);
  // The previous step's results are handled while this one runs (without overlap: this step's, now); then
  // the masks of this step's constrained rows, which needed those results.
  try {
    if (inflight_.size() > 1 || !overlap_)
      finish_inflight();
    else
      publish_and_deliver();
  } catch (...) {
    supply_masks();
    throw;
  }
  supply_masks();
  return true;
}

void Scheduler::publish_stats() {
  const BlockAllocator& b = cache_->blocks();
  SchedulerStats st;
  st.running = static_cast<int>(running_.size());
  // The executor's own block (graph padding rows) is no sequence's: it counts as neither total nor used.
  st.kv_blocks_total = b.num_total() - executor_->reserved_blocks();
  st.kv_blocks_free = b.num_free();
  st.kv_blocks_cached = prefix_.evictable();
  st.kv_blocks_in_use = st.kv_blocks_total - st.kv_blocks_free - st.kv_blocks_cached;
  st.preemptions = preemptions_;
  st.prefix_cache_hit_tokens = hit_tokens_;
  st.prompt_tokens_computed = computed_prompt_tokens_;
  st.generated_tokens = generated_;
  st.steps = steps_;
  st.decode = decode_times_;
  st.wait_seconds = wait_seconds_;
  st.host_seconds = host_seconds_;
  st.mixed = mixed_times_;
  std::lock_guard lock(mutex_);
  st.waiting = static_cast<int>(waiting_.size() + incoming_.size());
  stats_ = st;
}

}  // namespace kestrel
