// Chat templates: the Jinja programs shipped with models (tokenizer.chat_template in GGUF,
// chat_template in tokenizer_config.json) that turn OpenAI-style messages into a prompt string.
// Rendering matches Hugging Face's transformers byte for byte: jinja2's ImmutableSandboxedEnvironment
// with trim_blocks, lstrip_blocks and loop controls, plus HF's tojson, raise_exception and
// strftime_now. Parse once, render many times; a ChatTemplate is immutable and thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"

namespace kestrel {

namespace chat_template {
struct Node;
}  // namespace chat_template

// JSON that keeps object key order (tool schemas render in the order the client sent them).
// nlohmann::json converts to it implicitly, with its keys already sorted.
using ChatJson = nlohmann::ordered_json;

// What one render may spend. Templates come from model files, so a broken or hostile one must end in a
// clear error rather than hang its thread or exhaust memory (jinja2's sandbox only caps range()).
// A step is one statement, expression or loop iteration, or one element visited by an operation
// whose work grows with its input (copying, comparing, printing, serialising, sorting).
struct RenderLimits {
  uint64_t max_steps = 10'000'000;
  size_t max_bytes = size_t{256} << 20;        // strings and list items made or copied, summed over the render
  size_t max_string_bytes = size_t{16} << 20;  // one string value
  size_t max_list_items = size_t{1} << 20;     // one list or dict
  size_t max_output_bytes = size_t{16} << 20;  // the rendered text
  int max_depth = 400;                         // nested statements, expressions and macro calls

  // The defaults, raised in proportion for a large context (a long conversation is copied a few times
  // while rendering; `context_bytes` is the size of its JSON).
  static RenderLimits for_input(size_t context_bytes);
};

// A render that went over its RenderLimits. The message names the limit.
class TemplateBudgetError : public Error {
 public:
  using Error::Error;
};

struct ChatRenderOptions {
  // The time strftime_now() formats; unset means the local time at render.
  std::optional<std::tm> now;
  RenderLimits limits;
};

class ChatTemplate {
 public:
  // Throws kestrel::Error with line and column on a syntax error.
  static ChatTemplate parse(std::string source);

  // context holds the template's variables: messages, add_generation_prompt, bos_token, eos_token,
  // tools, enable_thinking, ... Throws kestrel::Error on a runtime error; a template's own
  // raise_exception(msg) becomes an Error whose what() is exactly msg. Throws TemplateBudgetError when
  // the render goes over options.limits.
  std::string render(const ChatJson& context, const ChatRenderOptions& options = {}) const;

  const std::string& source() const { return source_; }

 private:
  std::string source_;
  std::shared_ptr<const std::vector<std::unique_ptr<chat_template::Node>>> body_;
};

// Renders messages the way transformers' apply_chat_template(tokenize=False) does: extra's keys
// (tools, enable_thinking, date_string, ...) become template variables, and tools/documents are
// None unless given.
std::string render_chat(const ChatTemplate& tmpl, const ChatJson& messages, bool add_generation_prompt,
                        const std::string& bos_token, const std::string& eos_token,
                        const ChatJson& extra = ChatJson::object(), const ChatRenderOptions& options = {});

}  // namespace kestrel
