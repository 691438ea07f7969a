#include "engine/generate.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"

namespace kestrel {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

std::string StopMatcher::push(std::string_view text) {
  if (stopped_) return {};
  pending_ += text;
  size_t cut = std::string::npos, len = 0;  // the earliest stop string; the longest of those starting there
  for (const auto& s : stops_) {
    if (s.empty()) continue;
    const size_t at = pending_.find(s);
    if (at != std::string::npos && (at < cut || (at == cut && s.size() > len))) cut = at, len = s.size();
  }
  if (cut != std::string::npos) {
    stopped_ = true;
    std::string out = pending_.substr(0, include_ ? cut + len : cut);
    pending_.clear();
    return out;
  }
  // Keep the longest tail that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const auto& s : stops_)
    for (size_t n = std::min(s.size() - (s.empty() ? 0 : 1), pending_.size()); n > hold; --n)
      if (pending_.compare(pending_.size() - n, n, s, 0, n) == 0) {
        hold = n;
        break;
      }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string StopMatcher::flush() {
  std::string out;
  if (!stopped_) out.swap(pending_);
  return out;
}

GenerateResult generate(Session& session, const Tokenizer& tok, const SamplingParams& sampling,
                        std::span<const int32_t> new_tokens, const GenerateOptions& opt,
                        const std::function<void(std::string_view)>& on_text) {
  KS_CHECK(opt.max_tokens >= 0, "max_tokens must be >= 0");
  GenerateResult r;
  r.prompt_tokens = static_cast<int>(new_tokens.size());
  StreamDecoder decoder(tok, /*skip_special=*/true);
  StopMatcher stops(opt.stop);
  auto emit = [&](const std::string& s) {
    if (s.empty()) return;
    r.text += s;
    if (on_text) on_text(s);
  };

  structured::TokenConstraint* constraint = opt.constraint.get();
  uint32_t state = constraint ? constraint->start() : 0;
  std::shared_ptr<const structured::TokenMask> mask;
  auto allowed = [&]() -> std::span<const uint32_t> {
    if (!constraint) return {};
    mask = constraint->mask(state);
    return *mask;
  };
  auto t0 = std::chrono::steady_clock::now();
  // feed_and_sample keeps logits on the GPU when the session runs there; the pick after the prompt
  // counts as prompt time.
  int32_t next = opt.max_tokens > 0 ? session.feed_and_sample(new_tokens, sampling, allowed()) : -1;
  if (opt.max_tokens == 0) session.feed(new_tokens);
  r.prompt_seconds = seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  r.finish_reason = "length";
  for (int i = 0; i < opt.max_tokens; ++i) {
    if (opt.cancel && opt.cancel->load()) {
      r.finish_reason = "cancelled";
      break;
    }
    r.tokens.push_back(next);
    if (constraint) {
      state = constraint->next(state, next);
      KS_CHECK(state != structured::Automaton::kDead, "token {} is not allowed by the output constraint", next);
    }
    // With a constraint, an end-of-generation token is drawn only where the output is complete.
    if ((!opt.ignore_eos || constraint) && tok.is_eog(next)) {
      r.finish_reason = "stop";
      break;
    }
    emit(stops.push(decoder.push(next)));
    if (stops.stopped() || (constraint && constraint->finished(state))) {
      r.finish_reason = "stop";
      break;
    }
    if (i + 1 == opt.max_tokens) break;
    if (session.length() + 1 > session.n_ctx()) break;  // context full: stop with "length"
    next = session.feed_and_sample(std::span(&next, 1), sampling, allowed());
  }
  // The last sampled token is not in the cache yet; keep the session's tokens equal to its cache.
  if (!stops.stopped()) emit(stops.push(decoder.flush()) + stops.flush());
  r.generate_seconds = seconds_since(t0);
  return r;
}

}  // namespace kestrel
