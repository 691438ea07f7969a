// Turns a conversation (OpenAI-style messages as JSON) into prompt text with the model's own chat
// template, parsed once. Models without a template get a plain "role: content" fallback (logged).
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "model/model.h"

namespace kestrel {

class ChatTemplate;

class ChatFormatter {
 public:
  explicit ChatFormatter(const Model& model);
  ~ChatFormatter();
  bool has_template() const { return tmpl_ != nullptr; }
  // messages: [{"role": ..., "content": ...}, ...]; extra: more template variables (tools,
  // enable_thinking ...). Throws kestrel::Error on a template error (e.g. raise_exception).
  std::string render(const nlohmann::json& messages, bool add_generation_prompt,
                     const nlohmann::json& extra = nlohmann::json::object()) const;

 private:
  std::unique_ptr<ChatTemplate> tmpl_;
  std::string bos_, eos_;
};

}  // namespace kestrel
