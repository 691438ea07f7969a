#include "engine/chat_format.h"

#include "core/error.h"
#include "core/log.h"
#include "tokenizer/chat_template/chat_template.h"

namespace kestrel {
namespace {

// The bytes of the strings in a JSON value: what a render copies, for sizing its budget.
size_t string_bytes(const nlohmann::json& j) {
  if (j.is_string()) return j.get_ref<const std::string&>().size();
  size_t n = 0;
  if (j.is_object())
    for (const auto& [k, v] : j.items()) n += k.size() + string_bytes(v);
  else if (j.is_array())
    for (const auto& v : j) n += string_bytes(v);
  return n;
}

}  // namespace

ChatFormatter::ChatFormatter(const Model& model) {
  const Tokenizer& tok = *model.tokenizer;
  if (tok.bos_id() >= 0) bos_ = tok.token_text(tok.bos_id());
  if (tok.eos_id() >= 0) eos_ = tok.token_text(tok.eos_id());
  if (model.chat_template.empty()) return;
  tmpl_ = std::make_unique<ChatTemplate>(ChatTemplate::parse(model.chat_template));
  probe();
}

ChatFormatter::~ChatFormatter() = default;

void ChatFormatter::probe() const {
  using nlohmann::json;
  auto msg = [](const char* role, const char* content) { return json{{"role", role}, {"content", content}}; };
  const json turns = {msg("user", "Hello! Can you help me?"), msg("assistant", "Of course. What do you need?"),
                      msg("user", "A short poem about the sea, please.")};
  json with_system = json::array({msg("system", "You are a helpful assistant.")});
  with_system.insert(with_system.end(), turns.begin(), turns.end());
  // Some templates refuse a system turn (raise_exception): that is their right, so try without one.
  // Only the budget decides refusal; other errors will reach the requests that trigger them.
  std::string last_error;
  for (const json& conversation : {with_system, turns}) {
    try {
      render(conversation, true);
      return;
    } catch (const TemplateBudgetError& e) {
      KS_FAIL(
          "the model's chat template went over its render budget on a {}-message probe conversation, so it "
          "would on every chat request; refusing it: {}",
          conversation.size(), e.what());
    } catch (const Error& e) {
      last_error = e.what();
    }
  }
  log::warn("the model's chat template fails on a probe conversation ({}); chat requests may fail the same way",
            last_error);
}

std::string ChatFormatter::render(const nlohmann::json& messages, bool add_generation_prompt,
                                  const nlohmann::json& extra) const {
  KS_CHECK(messages.is_array() && !messages.empty(), "a conversation needs at least one message");
  if (!tmpl_) {
    log::warn_once("chat-fallback", "the model has no chat template; using a plain 'role: content' format");
    std::string out;
    for (const auto& m : messages)
      out += m.value("role", "user") + ": " +
             (m.contains("content") && m["content"].is_string() ? m["content"].get<std::string>() : "") + "\n";
    if (add_generation_prompt) out += "assistant:";
    return out;
  }
  nlohmann::json ctx = extra.is_object() ? extra : nlohmann::json::object();
  ctx["messages"] = messages;
  ctx["add_generation_prompt"] = add_generation_prompt;
  ctx["bos_token"] = bos_;
  ctx["eos_token"] = eos_;
  ChatRenderOptions options;
  options.limits = RenderLimits::for_input(string_bytes(ctx));
  return tmpl_->render(ctx, options);
}

}  // namespace kestrel
