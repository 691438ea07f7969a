// Tool calling in the OpenAI format over the models' own tool-call syntax: which syntax a chat template
// speaks (Hermes `<tool_call>{...}</tool_call>` as Qwen2.5/Qwen3 use, Llama 3's bare JSON, Mistral's
// `[TOOL_CALLS][...]`), the messages and system prompt the template gets, the grammar that forces calls
// (`tool_choice` required or named), and parsing calls back out of the answer, whole or streamed. A
// template that knows nothing of tools gets the tools described in a Hermes-style system prompt.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kestrel::server {

enum class ToolFormat : uint8_t { Hermes, Llama3Json, Mistral };

struct ToolSpec {
  nlohmann::json tools =
      nlohmann::json::array();  // [{"type": "function", "function": {name, description, parameters}}]
  enum class Choice : uint8_t { None, Auto, Required, Named } choice = Choice::Auto;
  std::string named;     // Choice::Named: the function
  bool parallel = true;  // parallel_tool_calls: more than one call per answer
  // Tool index -> its parameters' schema as sent (key order kept), where the body's text was at hand.
  std::map<size_t, std::string> ordered_parameters;
};

// Validates `tools`, `tool_choice` and `parallel_tool_calls` of a chat body; nullopt without tools.
// Throws ApiError (400) naming the field.
std::optional<ToolSpec> parse_tool_spec(const nlohmann::json& body);

struct ToolTemplate {
  ToolFormat format = ToolFormat::Hermes;
  bool native = false;  // the template renders `tools` itself
};
ToolTemplate detect_tool_template(std::string_view chat_template);

// The conversation as the template should see it: for a native template, tool calls' arguments as
// objects (as Hugging Face templates expect); otherwise tools described in the system message, calls
// as Hermes text and tool results as user turns wrapped in <tool_response>.
nlohmann::json tool_messages(const nlohmann::json& messages, const ToolSpec& spec, const ToolTemplate& t);

// GBNF for an answer that is tool calls only: one (or, with parallel calls, several) calls of the
// named function or of any of them, each with arguments valid under the function's `parameters`.
std::string tool_call_grammar(const ToolSpec& spec, ToolFormat format);

struct ToolCall {
  std::string name;
  std::string arguments;  // JSON text
};
struct ParsedAnswer {
  std::string content;  // text outside the calls (may be empty)
  std::vector<ToolCall> calls;
};
// The calls in an answer; nullopt when it holds none that parse (its text is then plain content).
std::optional<ParsedAnswer> parse_tool_calls(std::string_view text, ToolFormat format, const ToolSpec& spec);

// Streams an answer's content while holding back what may be a tool call: text is released as soon as it
// cannot be the start of one; a call's text is kept until the end, when parse_tool_calls decides.
class ToolCallStream {
 public:
  explicit ToolCallStream(ToolFormat format) : format_(format) {}
  // Text that may be sent as content now.
  std::string push(std::string_view piece);
  // Everything kept back (the caller parses it, or sends it as content if it holds no calls).
  const std::string& held() const { return held_; }
  // Whether nothing was sent yet (a parsed answer's content then goes out whole).
  bool sent_nothing() const { return !sent_any_; }

 private:
  ToolFormat format_;
  std::string held_;
  bool capturing_ = false, decided_ = false, sent_any_ = false;
};

// Rule names of a GBNF text with `prefix` in front (to combine several grammars into one).
std::string prefix_gbnf_rules(std::string_view gbnf, const std::string& prefix);

}  // namespace kestrel::server
