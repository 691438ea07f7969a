// One sequence on one model: the KV cache, the tokens it holds, and prompt feeding in chunks, stepped by
// the executor (engine/executor.h: decode graphs and device sampling where the lane has them). Used by
// `kestrel run`, `chat` (which keeps the cache between turns), `perplexity` and `bench`; the server's
// scheduler batches many sequences through its own executor.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "core/tensor.h"
#include "engine/executor.h"
#include "engine/kv_cache.h"
#include "engine/sampler.h"
#include "model/decoder.h"
#include "ops/context.h"

namespace kestrel {

struct SessionOptions {
  int n_ctx = 0;        // 0: the model's trained context (capped at 8192 to bound memory)
  int n_batch = 512;    // prompt tokens per forward step
  int block_size = 16;  // KV cache block size in tokens
  KvFormat kv_format;   // f32 pages by default (the CPU); CUDA reads bf16 or quantized ones
};

class Session {
 public:
  Session(Decoder& model, ops::Context ctx, const SessionOptions& opt);

  int n_ctx() const { return n_ctx_; }
  int32_t length() const { return seq_.length(); }
  const std::vector<int32_t>& tokens() const { return tokens_; }
  const ops::Context& context() const { return executor_->context(); }
  Decoder& model() { return *model_; }

  // Appends tokens and runs them through the model in chunks of n_batch. Returns f32 logits
  // [1, vocab] for the last token, or [n, vocab] for every new token when all_logits. `progress`
  // (optional) is called with the number of tokens done so far. Throws kestrel::Error when the
  // context would overflow (nothing is changed then).
  Tensor feed(std::span<const int32_t> tokens, bool all_logits = false,
              const std::function<void(int64_t)>& progress = {});
  // As feed, returning the logits of new tokens [from, n) only ([n - from, vocab]): chunks that end before
  // `from` compute none (perplexity scores only the second half of a window; with a large vocabulary the
  // output projection of the rows it skips is most of the work).
  Tensor feed_logits_from(std::span<const int32_t> tokens, int64_t from,
                          const std::function<void(int64_t)>& progress = {});
  // As feed, with the residual stream's input given for every token instead of its embedding
  // (StepSeq::embeddings): `embeddings` holds tokens.size() x hidden f32 values, row-major. The tokens
  // still give positions and KV slots; their ids may be placeholders in the vocabulary.
  Tensor feed_embeddings(std::span<const int32_t> tokens, std::span<const float> embeddings, bool all_logits = false);
  // Feeds tokens and samples the next token from the last position (on the device: only the id comes
  // back). The penalties count every token the session holds; the draw index is the new token's position.
  // allowed: the tokens the draw may pick (structured output; StepSeq::allowed), empty for all.
  int32_t feed_and_sample(std::span<const int32_t> tokens, const SamplingParams& sampling,
                          std::span<const uint32_t> allowed = {});
  // Drops cached tokens from position n on (for chat turns that diverge, or to restart). With a per-channel
  // key format (KIVI) a cut inside a sealed block recomputes that block's kept positions (a step).
  void truncate(int32_t n);
  // The keys and values the cache holds for position p of layer `layer`, decoded to f32 [n_kv_heads *
  // head_dim] each (a CPU session: calibration reads them).
  void read_kv(int layer, int32_t p, float* k, float* v) const;
  // Longest common prefix of the cached tokens and `tokens`.
  int32_t common_prefix(std::span<const int32_t> tokens) const;

 private:
  // feed_logits_from, with the tokens' embeddings (empty: from the model's table).
  Tensor feed_rows(std::span<const int32_t> tokens, std::span<const float> embeddings, int64_t from,
                   const std::function<void(int64_t)>& progress);
  // Feeds all but the last chunk; returns the last chunk.
  std::span<const int32_t> feed_prefix(std::span<const int32_t> tokens);
  void check_room(int64_t n) const;

  Decoder* model_;
  int n_ctx_;
  int n_batch_;
  std::unique_ptr<KvCache> cache_;
  SequenceKv seq_;
  std::vector<int32_t> tokens_;
  bool embedded_ = false;               // some of tokens_ came with embeddings: truncate() cannot recompute them
  std::unique_ptr<Executor> executor_;  // after cache_: it holds a block of the cache until destroyed
};

}  // namespace kestrel
