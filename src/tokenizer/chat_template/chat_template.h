// Chat templates: the Jinja programs shipped with models (tokenizer.chat_template in GGUF,
// chat_template in tokenizer_config.json) that turn OpenAI-style messages into a prompt string.
// Rendering matches Hugging Face's transformers byte for byte: jinja2's ImmutableSandboxedEnvironment
// with trim_blocks, lstrip_blocks and loop controls, plus HF's tojson, raise_exception and
// strftime_now. Parse once, render many times; a ChatTemplate is immutable and thread-safe.
#pragma once

#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace kestrel {

namespace chat_template {
struct Node;
}  // namespace chat_template

// JSON that keeps object key order (tool schemas render in the order the client sent them).
// nlohmann::json converts to it implicitly, with its keys already sorted.
using ChatJson = nlohmann::ordered_json;

struct ChatRenderOptions {
  // The time strftime_now() formats; unset means the local time at render.
  std::optional<std::tm> now;
};

class ChatTemplate {
 public:
  // Throws kestrel::Error with line and column on a syntax error.
  static ChatTemplate parse(std::string source);

  // context holds the template's variables: messages, add_generation_prompt, bos_token, eos_token,
  // tools, enable_thinking, ... Throws kestrel::Error on a runtime error; a template's own
  // raise_exception(msg) becomes an Error whose what() is exactly msg.
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
