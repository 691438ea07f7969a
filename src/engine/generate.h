// Generating text for one sequence: feed the prompt, then sample token by token until an
// end-of-generation token, a stop string or the token limit, streaming text that is always valid UTF-8
// and never shows a stop string or a prefix of one that later completes.
#pragma once

#include <atomic>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/sampler.h"
#include "engine/session.h"
#include "structured/grammar_matcher.h"
#include "tokenizer/tokenizer.h"

namespace kestrel {

struct GenerateOptions {
  int max_tokens = 256;
  std::vector<std::string> stop;  // stop strings (not included in the output)
  bool ignore_eos = false;
  // Checked before every token: once true, generation ends with finish_reason "cancelled" (chat's Ctrl-C).
  const std::atomic<bool>* cancel = nullptr;
  // Structured output (engine/structured_output.h): every token is one it allows; generation stops once
  // it is complete and allows nothing more, or at an end-of-generation token it allows.
  std::shared_ptr<structured::TokenConstraint> constraint;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated tokens (the end-of-generation token included when hit)
  std::string text;
  std::string finish_reason;  // "stop" (end token or stop string), "length" or "cancelled"
  int prompt_tokens = 0;
  double prompt_seconds = 0;
  double generate_seconds = 0;
};

// Feeds `new_tokens` (appended to what the session already holds) and generates. `on_text` receives
// each piece of text as it becomes final.
GenerateResult generate(Session& session, const Tokenizer& tok, const SamplingParams& sampling,
                        std::span<const int32_t> new_tokens, const GenerateOptions& opt,
                        const std::function<void(std::string_view)>& on_text = {});

// Holds back text that might be the start of a stop string; reports when one is complete.
class StopMatcher {
 public:
  // include: the stop string that ends the text is part of it (vLLM's include_stop_str_in_output).
  explicit StopMatcher(std::vector<std::string> stops, bool include = false)
      : stops_(std::move(stops)), include_(include) {}
  // Adds text; returns what can be emitted now. Sets stopped() once a stop string appears.
  std::string push(std::string_view text);
  std::string flush();  // what is still held back (at the end of generation)
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  bool include_ = false;
  std::string pending_;
  bool stopped_ = false;
};

}  // namespace kestrel
