#include "engine/session.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "engine/batch_plan.h"

namespace kestrel {

Session::Session(Decoder& model, ops::Context ctx, const SessionOptions& opt)
    : model_(&model), ctx_(std::move(ctx)), n_batch_(std::max(1, opt.n_batch)) {
  model.place_on(ctx_);
  const ModelConfig& c = model.config();
  n_ctx_ = opt.n_ctx > 0 ? opt.n_ctx : std::min(c.max_ctx > 0 ? c.max_ctx : 4096, 8192);
  KS_CHECK(n_ctx_ > 0 && n_ctx_ <= (1 << 22), "context size {} is out of range", n_ctx_);
  KvCacheConfig kc;
  kc.n_layers = c.n_layers;
  kc.n_kv_heads = c.n_kv_heads;
  kc.head_dim = c.head_dim;
  kc.block_size = opt.block_size;
  // One more block on CUDA: the decode graphs' padding rows write there.
  kc.num_blocks = (n_ctx_ + opt.block_size - 1) / opt.block_size + (DecodeGraphs::supported(ctx_) ? 1 : 0);
  kc.dtype = opt.kv_dtype;
  cache_ = std::make_unique<KvCache>(kc, ctx_);
}

Tensor Session::feed(std::span<const int32_t> tokens, bool all_logits, const std::function<void(int64_t)>& progress) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  KS_CHECK(n > 0, "nothing to feed");
  KS_CHECK(length() + n <= n_ctx_,
           "the prompt needs {} tokens but the context holds {} ({} already used); use a larger --ctx-size or a "
           "shorter prompt",
           length() + n, n_ctx_, length());
  KS_CHECK(seq_.reserve(*cache_, static_cast<int32_t>(length() + n)), "KV cache has no free blocks");
  const int64_t vocab = model_->config().vocab;
  if (n == 1 && !all_logits && DecodeGraphs::supported(ctx_)) {
    const Tensor dev = decode_on_device(tokens[0]);
    Tensor out = Tensor::empty_host(DType::F32, {1, vocab});
    ops::download(ctx_, dev, out);
    if (progress) progress(1);
    return out;
  }
  Tensor out = Tensor::empty_host(DType::F32, {all_logits ? n : 1, vocab});
  const float scale = 1.f / std::sqrt(static_cast<float>(model_->config().head_dim));
  for (int64_t done = 0; done < n;) {
    const int64_t chunk = std::min<int64_t>(n_batch_, n - done);
    const bool last_chunk = done + chunk == n;
    SeqWork w{&seq_, tokens.subspan(done, chunk),
              all_logits ? LogitRows::All : (last_chunk ? LogitRows::Last : LogitRows::None)};
    StepBatch b = plan_step(*cache_, std::span(&w, 1), scale);
    Tensor logits = model_->forward(ctx_, b, cache_->layers());
    seq_.set_length(static_cast<int32_t>(length() + chunk));
    if (all_logits)
      std::memcpy(out.ptr<float>() + done * vocab, logits.data, logits.nbytes());
    else if (last_chunk)
      std::memcpy(out.data, logits.data, logits.nbytes());
    done += chunk;
    if (progress) progress(done);
  }
  tokens_.insert(tokens_.end(), tokens.begin(), tokens.end());
  return out;
}

Tensor Session::decode_on_device(int32_t token) {
  if (!graphs_) {
    // Prefill chunks share the model's scratch with the graphs: size it once for both.
    model_->reserve(ctx_, n_batch_);
    graphs_ = std::make_unique<DecodeGraphs>(*model_, *cache_, ctx_, 1, n_ctx_);
  }
  const int32_t len = length();
  SeqWork w{&seq_, std::span(&token, 1), LogitRows::Last};
  Tensor logits = graphs_->step(std::span(&w, 1));
  seq_.set_length(len + 1);
  tokens_.push_back(token);
  return logits;
}

int32_t Session::feed_and_sample(std::span<const int32_t> tokens, Sampler& sampler) {
  const SamplingParams& p = sampler.params();
  const bool penalties = p.repetition_penalty != 1.f || p.presence_penalty != 0.f || p.frequency_penalty != 0.f;
  if (!DecodeGraphs::supported(ctx_) || penalties) {
    Tensor logits = feed(tokens);
    return sampler.sample(std::span(logits.ptr<float>(), logits.numel()), tokens_);
  }
  KS_CHECK(!tokens.empty(), "nothing to feed");
  KS_CHECK(length() + static_cast<int64_t>(tokens.size()) <= n_ctx_,
           "the prompt needs {} tokens but the context holds {} ({} already used); use a larger --ctx-size or a "
           "shorter prompt",
           length() + tokens.size(), n_ctx_, length());
  if (tokens.size() == 1) {
    KS_CHECK(seq_.reserve(*cache_, length() + 1), "KV cache has no free blocks");
    return sample_on_device(ctx_, decode_on_device(tokens[0]), p, length()).at(0);
  }
  const Tensor logits = ops::upload(ctx_, feed(tokens));
  return sample_on_device(ctx_, logits, p, length()).at(0);
}

void Session::truncate(int32_t n) {
  KS_CHECK(n >= 0, "negative truncation");
  if (n >= length()) return;
  seq_.truncate(*cache_, n);
  tokens_.resize(n);
}

int32_t Session::common_prefix(std::span<const int32_t> tokens) const {
  const size_t m = std::min(tokens.size(), tokens_.size());
  size_t i = 0;
  while (i < m && tokens[i] == tokens_[i]) ++i;
  return static_cast<int32_t>(i);
}

}  // namespace kestrel
