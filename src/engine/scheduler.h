// Continuous batching over the paged KV cache. Every step takes one token from each running sequence
// that is decoding and chunks of prompts still being prefilled, up to a token budget, and runs them as
// one forward pass (chunked prefill). Waiting requests are admitted, oldest first, while the allocator
// has blocks for their next chunk; when a running sequence needs a block and none is left, the youngest
// running sequence is preempted (its blocks freed, its tokens recomputed when it is readmitted). Full
// blocks are shared through the prefix cache. The contract is written in docs/server.md ("Scheduler").
//
// Threads: submit(), wake(), stop() and stats() are safe from any thread; step() and run() belong to the
// engine thread. Requests report back through Request::on_output on the engine thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "engine/executor.h"
#include "engine/kv_cache.h"
#include "engine/prefix_cache.h"
#include "engine/request.h"
#include "model/decoder.h"
#include "ops/context.h"
#include "tokenizer/tokenizer.h"

namespace kestrel {

struct SchedulerOptions {
  int max_batch_tokens = 512;  // tokens per forward step: decode tokens plus prefill chunks
  // Prefill tokens per step while sequences are decoding (0: the whole budget): smaller chunks keep the
  // decode rows' inter-token latency steady under load; prefill gets the whole budget when none decode.
  int prefill_chunk = 0;
  // A backlog lifts that cap: once the oldest waiting request has queued this many milliseconds, prefill
  // gets the whole budget until the queue is served (time to first token outweighs the decode rows'
  // steadiness when requests pile up faster than small chunks admit them). Negative: never lifted.
  double prefill_chunk_max_wait_ms = -1;
  int max_running = 64;    // sequences being served at once
  int max_waiting = 4096;  // requests waiting for a running slot beyond which submit() refuses (HTTP 429)
  int n_ctx = 0;           // positions per sequence (prompt + generated); 0: the model's context
  bool prefix_cache = true;
  // Plan step N+1 while step N runs (asynchronous scheduling): -1 where the lane is asynchronous (CUDA),
  // 0 never, 1 always (tests cover the logic on the CPU this way).
  int overlap = -1;
};

// Where the engine's time goes: steps, the sequences they carried, and their wall time (executor.h).
struct StepTimes {
  uint64_t steps = 0;
  uint64_t rows = 0;
  double seconds = 0;         // the engine's time: between consecutive results while busy
  double device_seconds = 0;  // the lane's time on the steps' work (the rest is the GPU waiting on the host)
};

struct SchedulerStats {
  int waiting = 0;
  int running = 0;
  int kv_blocks_total = 0;
  int kv_blocks_free = 0;    // in the allocator's free list
  int kv_blocks_cached = 0;  // held by the prefix cache alone (reclaimable)
  int kv_blocks_in_use = 0;  // held by sequences (0 once everything finished: anything else is a leak)
  uint64_t preemptions = 0;
  uint64_t prefix_cache_hit_tokens = 0;
  uint64_t prompt_tokens_computed = 0;  // prefill work done, recomputation included
  uint64_t generated_tokens = 0;
  uint64_t steps = 0;
  StepTimes decode;  // steps of decode rows only
  StepTimes mixed;   // steps with prefill chunks
  // The engine thread's time: waiting for a step's results, and everything else it did while working
  // (handling results and events, planning, staging and launching).
  double wait_seconds = 0;
  double host_seconds = 0;
};

class Scheduler {
 public:
  Scheduler(Decoder& model, const Tokenizer& tokenizer, KvCache& cache, ops::Context ctx, const SchedulerOptions& opt);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  const SchedulerOptions& options() const { return opt_; }
  // The longest prompt plus max_tokens a request may ask for.
  int n_ctx() const { return opt_.n_ctx; }

  // Queues a request. Returns false (and keeps nothing) when max_waiting requests already wait beyond
  // the free running slots. Throws kestrel::Error
  // for a request that can never run (empty prompt, token outside the vocabulary, too long for n_ctx,
  // max_tokens < 1, bad sampling parameters).
  bool submit(std::shared_ptr<Request> request);
  // Makes the engine look at its requests again (after setting Request::cancelled).
  void wake();

  // One engine iteration: take new requests, drop cancelled ones, schedule, run the model, report.
  // Returns false when there was nothing to do.
  bool step();
  // Runs step() until stop(), sleeping while idle.
  void run();
  void stop();
  // Cancels every queued and running request (they get a final event with FinishReason::Cancelled at
  // the next step).
  void cancel_all();

  SchedulerStats stats() const;

 private:
  struct Sequence;
  using SeqPtr = std::unique_ptr<Sequence>;
  struct InFlight;
  using Planned = std::pair<Sequence*, int32_t>;  // a sequence and the tokens it runs in the step

  // The most tokens of s the next step may compute (all it has left, except in batch-invariant mode).
  int32_t chunk_cap(const Sequence& s) const;
  // Whether the oldest waiting request has queued past prefill_chunk_max_wait_ms.
  bool backlogged() const;
  // Plans the next step; nullopt when it would have to preempt and may not (a step is in flight).
  std::optional<std::vector<Planned>> schedule(bool may_preempt);
  bool submit(const std::vector<Planned>& plan);
  // Collects the oldest step in flight: tokens, events, retirement. Without `deliver` the events wait for
  // the next publish_and_deliver() (so the next step can be launched first).
  void finish_inflight(bool deliver = true);
  // A sequence whose next step needs its pending token on the host (penalties).
  bool host_state_pending() const;
  // Hands the executor the masks of the last step's constrained rows planned with a token in flight.
  void supply_masks();
  bool step_once();
  // Releases a sequence's blocks and drops it once no step in flight points at it.
  void retire(SeqPtr s);

  void take_incoming();
  void drop_cancelled();
  bool reserve(Sequence& s, int32_t length);
  void preempt(SeqPtr s);
  void admit_prefix(Sequence& s);
  void extend_hashes(Sequence& s, int32_t n_blocks);
  void register_full_blocks(Sequence& s);
  void accept_token(Sequence& s, const SeqResult& result);
  void finish(Sequence& s, FinishReason why);
  void emit(Sequence& s);
  void release(Sequence& s);
  void publish_stats();
  void publish_and_deliver();

  Decoder* model_;
  const Tokenizer* tok_;
  KvCache* cache_;
  ops::Context ctx_;
  SchedulerOptions opt_;
  PrefixCache prefix_;
  std::unique_ptr<Executor> executor_;
  std::deque<InFlight> inflight_;    // submitted steps, oldest first (at most two, briefly)
  std::vector<uint32_t> no_tokens_;  // an all-zero token mask
  bool overlap_ = false;
  std::chrono::steady_clock::time_point last_collect_{};

  std::deque<SeqPtr> waiting_;   // oldest first (preempted sequences go back in arrival order)
  std::vector<SeqPtr> running_;  // oldest first
  uint64_t next_order_ = 0;
  // Events of this step, delivered after the stats are published.
  std::vector<std::pair<std::shared_ptr<Request>, RequestOutput>> events_;
  uint64_t preemptions_ = 0, hit_tokens_ = 0, computed_prompt_tokens_ = 0, generated_ = 0, steps_ = 0;
  StepTimes decode_times_, mixed_times_;
  double wait_seconds_ = 0, host_seconds_ = 0;

  mutable std::mutex mutex_;  // guards the fields below
  std::condition_variable cv_;
  std::vector<SeqPtr> incoming_;
  bool stop_ = false, woken_ = false, cancel_all_ = false;
  SchedulerStats stats_;
};

}  // namespace kestrel
