#include "tokenizer/chat_template/chat_template.h"

#include "core/error.h"
#include "tokenizer/chat_template/interpreter.h"
#include "tokenizer/chat_template/parser.h"

namespace kestrel {

ChatTemplate ChatTemplate::parse(std::string source) {
  ChatTemplate t;
  t.body_ = std::make_shared<const chat_template::Body>(chat_template::parse_template(source));
  t.source_ = std::move(source);
  return t;
}

std::string ChatTemplate::render(const ChatJson& context, const ChatRenderOptions& options) const {
  KS_CHECK(body_, "chat template: render() on a template that was never parsed");
  KS_CHECK(context.is_object(), "chat template context must be a JSON object, got {}", context.type_name());
  const chat_template::Value ctx = chat_template::Value::from_json(context);
  auto now = [fixed = options.now]() -> std::tm {
    if (fixed) return *fixed;
    const std::time_t t = std::time(nullptr);
    std::tm local{};
    localtime_r(&t, &local);
    return local;
  };
  chat_template::Interpreter interpreter(now, options.limits);
  return interpreter.render(*body_, ctx.as_dict());
}

std::string render_chat(const ChatTemplate& tmpl, const ChatJson& messages, bool add_generation_prompt,
                        const std::string& bos_token, const std::string& eos_token, const ChatJson& extra,
                        const ChatRenderOptions& options) {
  KS_CHECK(messages.is_array(), "chat messages must be a JSON array, got {}", messages.type_name());
  KS_CHECK(extra.is_object() || extra.is_null(), "extra chat template variables must be a JSON object");
  ChatJson context = extra.is_object() ? extra : ChatJson::object();
  // transformers always passes tools and documents, as None when absent.
  if (!context.contains("tools")) context["tools"] = nullptr;
  if (!context.contains("documents")) context["documents"] = nullptr;
  context["messages"] = messages;
  context["add_generation_prompt"] = add_generation_prompt;
  context["bos_token"] = bos_token;
  context["eos_token"] = eos_token;
  return tmpl.render(context, options);
}

}  // namespace kestrel
