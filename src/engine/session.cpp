#include "engine/session.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "engine/batch_plan.h"

namespace kestrel {

Session::Session(Decoder& model, ops::Context ctx, const SessionOptions& opt)
    : model_(&model), ctx_(std::move(ctx)), n_batch_(std::max(1, opt.n_batch)) {
  const ModelConfig& c = model.config();
  n_ctx_ = opt.n_ctx > 0 ? opt.n_ctx : std::min(c.max_ctx > 0 ? c.max_ctx : 4096, 8192);
  KS_CHECK(n_ctx_ > 0 && n_ctx_ <= (1 << 22), "context size {} is out of range", n_ctx_);
  KvCacheConfig kc;
  kc.n_layers = c.n_layers;
  kc.n_kv_heads = c.n_kv_heads;
  kc.head_dim = c.head_dim;
  kc.block_size = opt.block_size;
  kc.num_blocks = (n_ctx_ + opt.block_size - 1) / opt.block_size;
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
