#include "engine/chat_format.h"

#include "core/error.h"
#include "core/log.h"
#include "tokenizer/chat_template/chat_template.h"

namespace kestrel {

ChatFormatter::ChatFormatter(const Model& model) {
  const Tokenizer& tok = *model.tokenizer;
  if (tok.bos_id() >= 0) bos_ = tok.token_text(tok.bos_id());
  if (tok.eos_id() >= 0) eos_ = tok.token_text(tok.eos_id());
  if (!model.chat_template.empty()) tmpl_ = std::make_unique<ChatTemplate>(ChatTemplate::parse(model.chat_template));
}

ChatFormatter::~ChatFormatter() = default;

std::string ChatFormatter::render(const nlohmann::json& messages, bool add_generation_prompt,
                                  const nlohmann::json& extra) const {
  KS_CHECK(messages.is_array() && !messages.empty(), "a conversation needs at least one message");
  if (!tmpl_) {
    log::warn_once("chat-fallback", "the model has no chat template; using a plain 'role: content' format");
    std::string out;
    for (const auto& m : messages)
      out += m.value("role", "user") + ": " + (m.contains("content") && m["content"].is_string() ? m["content"].get<std::string>() : "") + "\n";
    if (add_generation_prompt) out += "assistant:";
    return out;
  }
  nlohmann::json ctx = extra.is_object() ? extra : nlohmann::json::object();
  ctx["messages"] = messages;
  ctx["add_generation_prompt"] = add_generation_prompt;
  ctx["bos_token"] = bos_;
  ctx["eos_token"] = eos_;
  return tmpl_->render(ctx);
}

}  // namespace kestrel
