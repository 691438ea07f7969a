#include "engine/session.h"

#include <algorithm>
#include <cstring>

#include "backends/backends.h"
#include "core/error.h"

namespace kestrel {

Session::Session(Decoder& model, ops::Context ctx, const SessionOptions& opt)
    : model_(&model), n_batch_(std::max(1, opt.n_batch)) {
  if (!ctx.runtime) ctx.runtime = backends::default_runtime(ctx.device);
  model.place_on(ctx);
  const ModelConfig& c = model.config();
  n_ctx_ = c.context_size(opt.n_ctx);
  KS_CHECK(n_ctx_ > 0 && n_ctx_ <= (1 << 22), "context size {} is out of range", n_ctx_);
  KvCacheConfig kc;
  kc.n_layers = c.n_layers;
  kc.n_kv_heads = c.n_kv_heads;
  kc.head_dim = c.head_dim;
  kc.block_size = kv_block_size(opt.kv_format, opt.block_size);
  // One more block where the executor records graphs: their padding rows write there.
  kc.num_blocks = (n_ctx_ + kc.block_size - 1) / kc.block_size + (ctx.runtime->graphs_supported() ? 1 : 0);
  kc.format = opt.kv_format;
  cache_ = std::make_unique<KvCache>(kc, ctx);
  ExecutorOptions eo;
  eo.max_step_tokens = n_batch_;
  eo.max_seqs = 1;
  eo.max_kv_len = n_ctx_;
  executor_ = std::make_unique<Executor>(model, *cache_, std::move(ctx), eo);
}

void Session::check_room(int64_t n) const {
  KS_CHECK(n > 0, "nothing to feed");
  KS_CHECK(length() + n <= n_ctx_,
           "the prompt needs {} tokens but the context holds {} ({} already used); use a larger --ctx-size or a "
           "shorter prompt",
           length() + n, n_ctx_, length());
}

Tensor Session::feed(std::span<const int32_t> tokens, bool all_logits, const std::function<void(int64_t)>& progress) {
  const auto n = static_cast<int64_t>(tokens.size());
  return all_logits ? feed_logits_from(tokens, 0, progress)
                    : feed_logits_from(tokens, std::max<int64_t>(n - 1, 0), progress);
}

Tensor Session::feed_logits_from(std::span<const int32_t> tokens, int64_t from,
                                 const std::function<void(int64_t)>& progress) {
  return feed_rows(tokens, {}, from, progress);
}

Tensor Session::feed_embeddings(std::span<const int32_t> tokens, std::span<const float> embeddings, bool all_logits) {
  const int64_t n = static_cast<int64_t>(tokens.size()), hidden = model_->config().hidden;
  KS_CHECK(embeddings.size() == static_cast<size_t>(n * hidden),
           "feed_embeddings: {} values for {} tokens; it needs {} (hidden size {})", embeddings.size(), n, n * hidden,
           hidden);
  return feed_rows(tokens, embeddings, all_logits ? 0 : std::max<int64_t>(n - 1, 0), {});
}

Tensor Session::feed_rows(std::span<const int32_t> tokens, std::span<const float> embeddings, int64_t from,
                          const std::function<void(int64_t)>& progress) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  KS_CHECK(from >= 0 && (from < n || n == 0), "feed: logits from row {} of {} tokens", from, n);
  check_room(n);
  KS_CHECK(seq_.reserve(*cache_, static_cast<int32_t>(length() + n)), "KV cache has no free blocks");
  const int64_t vocab = model_->config().vocab, hidden = model_->config().hidden;
  const bool last_only = from == n - 1;
  Tensor out = Tensor::empty_host(DType::F32, {n - from, vocab});
  for (int64_t done = 0; done < n;) {
    const int64_t chunk = std::min<int64_t>(n_batch_, n - done);
    const bool last_chunk = done + chunk == n;
    StepSeq s;
    s.kv = &seq_;
    s.prompt = true;
    s.tokens = tokens.subspan(done, chunk);
    if (!embeddings.empty()) s.embeddings = embeddings.subspan(done * hidden, chunk * hidden);
    // Only the last row wanted: that chunk's last row; else every row of a chunk that reaches `from`.
    s.logits = last_only ? (last_chunk ? LogitRows::Last : LogitRows::None)
                         : (done + chunk > from ? LogitRows::All : LogitRows::None);
    const StepResult r = executor_->run(std::span(&s, 1));
    KS_CHECK(r.seqs[0].error.empty(), "the step failed: {}", r.seqs[0].error);
    if (s.logits == LogitRows::Last) {
      std::memcpy(out.data, r.logits.data, r.logits.nbytes());
    } else if (s.logits == LogitRows::All) {
      const int64_t skip = std::max<int64_t>(from - done, 0);  // rows of this chunk before `from`
      std::memcpy(out.row(done + skip - from), r.logits.row(skip), (chunk - skip) * vocab * sizeof(float));
    }
    tokens_.insert(tokens_.end(), s.tokens.begin(), s.tokens.end());
    embedded_ |= !embeddings.empty();
    done += chunk;
    if (progress) progress(done);
  }
  return out;
}

std::span<const int32_t> Session::feed_prefix(std::span<const int32_t> tokens) {
  const size_t last = (tokens.size() - 1) / n_batch_ * n_batch_;
  if (last > 0) {
    for (size_t done = 0; done < last; done += n_batch_) {
      StepSeq s;
      s.kv = &seq_;
      s.prompt = true;
      s.tokens = tokens.subspan(done, n_batch_);
      const StepResult r = executor_->run(std::span(&s, 1));
      KS_CHECK(r.seqs[0].error.empty(), "the step failed: {}", r.seqs[0].error);
      tokens_.insert(tokens_.end(), s.tokens.begin(), s.tokens.end());
    }
  }
  return tokens.subspan(last);
}

int32_t Session::feed_and_sample(std::span<const int32_t> tokens, const SamplingParams& sampling,
                                 std::span<const uint32_t> allowed) {
  check_room(static_cast<int64_t>(tokens.size()));
  KS_CHECK(seq_.reserve(*cache_, static_cast<int32_t>(length() + tokens.size())), "KV cache has no free blocks");
  const std::span<const int32_t> tail = feed_prefix(tokens);
  tokens_.insert(tokens_.end(), tail.begin(), tail.end());  // the penalties see the fed tokens too
  StepSeq s;
  s.kv = &seq_;
  s.tokens = tail;
  s.sampling = &sampling;
  s.history = tokens_;
  s.draw = tokens_.size();
  s.allowed = allowed;
  StepResult r;
  try {
    r = executor_->run(std::span(&s, 1));
  } catch (...) {
    tokens_.resize(tokens_.size() - tail.size());
    throw;
  }
  KS_CHECK(r.seqs[0].error.empty(), "the step failed: {}", r.seqs[0].error);
  return r.seqs[0].token;
}

void Session::read_kv(int layer, int32_t p, float* k, float* v) const {
  KS_CHECK(context().device == Device::Cpu, "reading the KV cache back needs a CPU session");
  KS_CHECK(layer >= 0 && layer < cache_->config().n_layers && p >= 0 && p < length(),
           "read_kv: layer {} position {} outside {} layers x {} positions", layer, p, cache_->config().n_layers,
           length());
  const int64_t slot = seq_.slot(*cache_, p);
  ops::kv_load(cache_->layer(layer), false, slot, k);
  ops::kv_load(cache_->layer(layer), true, slot, v);
}

void Session::truncate(int32_t n) {
  KS_CHECK(n >= 0, "negative truncation");
  if (n >= length()) return;
  const int32_t kept = seq_.truncate(*cache_, n);
  // A per-channel key format (KIVI) keeps less when n falls inside a sealed block: the positions it dropped
  // are computed again, as a fresh prefill computes them.
  const std::vector<int32_t> again(tokens_.begin() + kept, tokens_.begin() + n);
  tokens_.resize(kept);
  const bool recomputable = again.empty() || !embedded_;
  if (kept == 0) embedded_ = false;
  KS_CHECK(recomputable,
           "truncate({}): the KV format kept {} positions; the ones up to {} were fed as embeddings, which the "
           "session does not keep to compute them again",
           n, kept, n);
  if (!again.empty()) feed(again);
}

int32_t Session::common_prefix(std::span<const int32_t> tokens) const {
  const size_t m = std::min(tokens.size(), tokens_.size());
  size_t i = 0;
  while (i < m && tokens[i] == tokens_[i]) ++i;
  return static_cast<int32_t>(i);
}

}  // namespace kestrel
