// A generation request as the engine sees it (already tokenized and validated), and the events the
// engine sends back while serving it. The HTTP layer builds requests; the scheduler serves them.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/sampler.h"
#include "structured/grammar_matcher.h"

namespace kestrel {

// Error: the model failed on the step (logged); the request ends without its text.
enum class FinishReason : uint8_t { None, Stop, Length, Cancelled, Error };
const char* finish_reason_name(FinishReason r);  // "stop", "length", "cancelled", "error"; "" for None

// One event: what happened to a request since the previous event. Sent on the engine thread.
struct RequestOutput {
  std::string text;                    // new text: whole UTF-8 characters, stop strings and their prefixes held back
  std::vector<int32_t> tokens;         // tokens sampled since the last event
  std::vector<TokenLogprob> logprobs;  // one per token when the request asked for logprobs
  FinishReason finish = FinishReason::None;  // set on the last event only
  int prompt_tokens = 0;
  int completion_tokens = 0;     // so far
  int cached_prompt_tokens = 0;  // prompt tokens whose K/V came from the prefix cache
};

struct Request {
  std::vector<int32_t> prompt;  // must not be empty
  SamplingParams sampling;
  int max_tokens = 16;  // generated tokens at most (the caller checks prompt + max_tokens against the context)
  std::vector<std::string> stop;        // stop strings; not part of the output
  std::vector<int32_t> stop_token_ids;  // generation ends after one of these (not part of the text)
  bool ignore_eos = false;
  bool include_stop_str = false;  // the stop string that ended the text stays in it
  int logprobs = -1;              // -1: none; k >= 0: each token's logprob and the k most likely alternatives
  // Structured output (engine/structured_output.h): every token is one the constraint allows, and
  // generation stops when the constraint is complete and allows nothing more. Null: free text.
  std::shared_ptr<structured::TokenConstraint> constraint;
  // Receives every event on the engine thread; must not block. Called at least once, with finish set.
  std::function<void(RequestOutput&&)> on_output;

  // Set from any thread (client gone, server stopping): the engine drops the request at its next step
  // and frees its KV blocks.
  std::atomic<bool> cancelled{false};
  std::chrono::steady_clock::time_point arrival = std::chrono::steady_clock::now();
};

}  // namespace kestrel
