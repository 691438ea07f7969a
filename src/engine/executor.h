// The one code path that runs a forward step (Session, the server's Scheduler and `bench` all call it).
// A step is a list of sequences, each with its new tokens and what it wants back: a sampled next token
// (with logprobs), or logits on the host. The executor
//   1. orders the sequences decode rows first and plans the step on the host (positions, KV slots,
//      attention slices, logit rows, sampling rows, penalty entries) into one staging buffer, and the
//      prompt embeddings some sequences bring (StepSeq::embeddings) into another,
//   2. copies them to the device with async copies,
//   3. runs the model (eagerly, or for a step of single-token rows without embeddings by replaying the
//      graph recorded for its batch-size bucket), plans attention once for the step (decode rows to the
//      split-KV kernel, prefill chunks to the prefill kernel), samples on the device (ops::sample),
//   4. copies back only the sampled ids, logprobs and the kernels' row-error words.
// submit() returns once the step is queued; collect() waits for its results. Between the two the host
// plans and submits the next step, whose decode rows may take their input tokens from this step's samples
// on the device (StepSeq::prev_index): asynchronous scheduling, as in vLLM's and SGLang's overlap
// schedulers. Everything goes through the context's lane (ops/runtime.h), so the same code runs on the
// CPU (where submit() does the work). Contract: docs/ARCHITECTURE.md ("One forward step").
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "engine/kv_cache.h"
#include "engine/sampler.h"
#include "model/decoder.h"
#include "ops/context.h"

namespace kestrel {

// Which rows of a sequence's new tokens return logits to the host.
enum class LogitRows : uint8_t { None, Last, All };

struct ExecutorOptions {
  int max_step_tokens = 512;  // tokens per step: decode rows and prefill chunks together
  int max_seqs = 64;          // sequences per step
  int max_kv_len = 4096;      // positions per sequence
  bool graphs = true;         // replay single-token steps from graphs where the lane records them
};

// One sequence's share of a step.
struct StepSeq {
  SequenceKv* kv = nullptr;         // its blocks must cover kv->length() + tokens.size()
  std::span<const int32_t> tokens;  // new tokens, placed after the kv->length() cached ones
  // >= 0: the (single) input token is the one sampled for sequence `prev_index` of the previously
  // submitted step, which must sample; `tokens` then holds one placeholder.
  int prev_index = -1;
  LogitRows logits = LogitRows::None;        // rows whose f32 logits come back to the host
  const SamplingParams* sampling = nullptr;  // non-null: sample the next token from the last row
  std::span<const int32_t> history;          // the tokens the penalties count
  uint64_t draw = 0;                         // the draw's index (sampler.h); the engine uses the new token's position
  int generated = 0;                         // tokens generated before this draw (SamplingParams::min_tokens)
  int top_logprobs = -1;                     // >= 0: the sampled token's logprob and this many alternatives
  // Non-empty: the tokens the draw may pick (structured output), ceil(vocab / 32) words of allow-bits.
  std::span<const uint32_t> allowed;
  // The mask comes after submit(), through supply_masks() (it depends on a token still in flight): the
  // forward runs meanwhile and the draw waits for it.
  bool mask_later = false;
  // The tokens are (part of) a prompt: they go through the prefill kernel even one at a time, so a prompt
  // token's result does not depend on how its prompt was cut into chunks (batch invariance). Single
  // tokens that are not a prompt's are decode rows.
  bool prompt = false;
  // Non-empty: prompt embeddings (vLLM's prompt_embeds), tokens.size() x hidden f32 values, row-major, that
  // replace the tokens' embedding rows as the residual stream's input (image features; for calibration,
  // the residual stream at the first block the model runs). Used as given: Gemma's embedding scale is not
  // applied. The tokens still give positions and KV slots; their ids may be placeholders but must be in the
  // vocabulary. Required of every sequence when the model runs blocks from first > 0 (Decoder::set_layers);
  // a step that carries them runs eagerly. Not with prev_index.
  std::span<const float> embeddings;
};

struct SeqResult {
  int32_t token = -1;    // the sampled token
  TokenLogprob logprob;  // when asked for
  std::string error;     // non-empty: the sequence's inputs were bad; its K/V are incomplete
};

struct StepResult {
  std::vector<SeqResult> seqs;  // in StepSeq order
  Tensor logits;                // host f32 [rows, vocab]: the rows StepSeq::logits asked for, in order
  bool graph = false;           // replayed from a recorded graph
  double ms = 0;                // wall time from submit() to the results
  double device_ms = 0;         // the lane's time from the step's first queued work to its last
};

class Executor {
 public:
  // The model must be placed on ctx.device. With graphs, one KV block of `cache` is taken for the padding
  // rows of partly filled buckets until destruction.
  Executor(Decoder& model, KvCache& cache, ops::Context ctx, const ExecutorOptions& opt);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  const ExecutorOptions& options() const { return opt_; }
  const ops::Context& context() const { return ctx_; }
  bool graphs_enabled() const;
  // KV blocks the executor holds for itself (the graphs' padding rows write one).
  int reserved_blocks() const;

  // Queues one step and returns; advances each sequence's KV length by its tokens at once (its K/V land
  // when the step runs, and every later step is ordered after it). At most two steps are in flight.
  // Throws kestrel::Error for a malformed step (nothing is queued then); a sequence whose inputs are bad
  // (token ids, KV blocks) or that a kernel rejects comes back with SeqResult::error set, and the others
  // are unaffected. The StepSeq spans are read before submit() returns.
  void submit(std::span<const StepSeq> seqs);
  // Completes the last submitted step when rows of it were submitted with mask_later: their masks, in
  // StepSeq order. Until then its sampling is not queued, and neither it nor a later step can be collected.
  void supply_masks(std::span<const std::span<const uint32_t>> masks);
  bool awaiting_masks() const;
  // Waits for the oldest submitted step and returns its results.
  StepResult collect();
  int in_flight() const;
  // submit() then collect() (with nothing else in flight).
  StepResult run(std::span<const StepSeq> seqs);
  // Records the graphs of every decode bucket now (otherwise on first use, and again after a buffer they
  // use moved). Waits for the steps in flight.
  void capture_graphs();

  // The graph buckets: batch sizes a single-token step is padded up to.
  static std::vector<int> buckets(int max_seqs);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  ops::Context ctx_;
  ExecutorOptions opt_;
};

}  // namespace kestrel
