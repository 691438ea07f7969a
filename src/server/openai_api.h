// The OpenAI wire format: turning /v1/completions and /v1/chat/completions bodies into validated
// generation parameters (every field type- and range-checked, with ApiError naming the parameter), and
// the JSON pieces of the responses (choices, usage, logprobs, stream chunks). No I/O and no model here.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/request.h"
#include "engine/sampler.h"
#include "engine/structured_output.h"
#include "server/tool_calls.h"
#include "tokenizer/tokenizer.h"

namespace kestrel::server {

enum class Endpoint : uint8_t { Completions, Chat };

struct GenerationSpec {
  Endpoint endpoint = Endpoint::Completions;
  std::string model;  // as sent; empty when absent
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  std::optional<int> max_tokens;
  SamplingParams sampling;
  bool has_seed = false;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;  // extension (as in vLLM): end generation on these token ids
  bool ignore_eos = false;              // extension: keep going past end-of-generation tokens
  bool include_stop_str = false;        // extension (vLLM's include_stop_str_in_output)
  int logprobs = -1;                    // -1: off; else the number of top alternatives per token
  // sampling.logit_bias and sampling.min_tokens are set here; the server checks the ids against the
  // vocabulary and fills sampling.min_tokens_ban.
  nlohmann::json template_kwargs = nlohmann::json::object();  // chat_template_kwargs: more template variables
  // Structured output, from whichever spelling the body used (OpenAI's response_format, llama.cpp's
  // grammar / json_schema, vLLM's guided_* and structured_outputs, SGLang's regex); the server compiles it.
  std::optional<ConstraintSpec> constraint;
  std::string constraint_field;  // the field it came from, for error messages
  std::optional<ToolSpec> tools;  // chat: the request's tools, tool_choice and parallel_tool_calls
  // The prompt: text (completions), token ids (completions), or messages (chat).
  std::string prompt_text;
  std::vector<int32_t> prompt_tokens;
  bool prompt_is_tokens = false;
  // [{"role", "content": string}], content parts already joined; assistant turns may carry "tool_calls"
  // ([{"id", "type": "function", "function": {"name", "arguments": JSON text}}]), tool turns "tool_call_id".
  nlohmann::json messages;
};

// Parses a request body as a JSON object. Throws ApiError (400): invalid_json, or invalid_value naming
// the field whose number is beyond a double's range (1e400).
nlohmann::json parse_json_body(std::string_view body);

// Validates a parsed body. Throws ApiError (400) naming the offending parameter.
// OpenAI's own defaults for the sampling fields (temperature 1, the filters off).
inline SamplingParams openai_sampling_defaults() {
  return {.temperature = 1.f};
}

// Sampling fields a body leaves out take `defaults` (a server's policy, engine/sampling_defaults.h).
// `raw`, the body's text when given, is where JSON schemas are read from in their declared key order
// (nlohmann::json sorts keys; a schema's property order is the order of the output).
GenerationSpec parse_generation_request(const nlohmann::json& body, Endpoint endpoint,
                                        const SamplingParams& defaults = openai_sampling_defaults(),
                                        std::string_view raw = {});

// A list of token ids, each checked as the 64-bit integer JSON carries (0 to 2^31 - 1) before it is
// narrowed. Throws ApiError (400) naming `param`.
std::vector<int32_t> parse_token_ids(const nlohmann::json& list, std::string_view param);

// The text of a token for logprobs: its bytes, as UTF-8 where they are valid.
std::string token_piece(const Tokenizer& tok, int32_t id);

nlohmann::json usage_json(int prompt_tokens, int completion_tokens, int cached_tokens);

// Logprobs of generated tokens: chat's {"content": [...]}, or completions' parallel arrays. For
// completions, text_offset advances over the pieces (offsets into the completion text).
nlohmann::json chat_logprobs_json(const Tokenizer& tok, std::span<const TokenLogprob> lps);
nlohmann::json completion_logprobs_json(const Tokenizer& tok, std::span<const TokenLogprob> lps, size_t& text_offset);

// JSON for the wire: invalid UTF-8 (inside token pieces) is replaced, never thrown.
std::string dump(const nlohmann::json& j);

}  // namespace kestrel::server
