// Turns a conversation (OpenAI-style messages as JSON) into prompt text with the model's own chat
// template, parsed once. Models without a template get a plain "role: content" fallback (logged).
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "model/model.h"

namespace kestrel {

class ChatTemplate;

class ChatFormatter {
 public:
  // Parses the model's template and renders a short probe conversation with it. Templates come from
  // model files: one that goes over its render budget on the probe would do so on every request, so
  // it is refused here with a kestrel::Error (as llama.cpp refuses templates it can't run).
  explicit ChatFormatter(const Model& model);
  ~ChatFormatter();
  bool has_template() const { return tmpl_ != nullptr; }
  // messages: [{"role": ..., "content": ...}, ...]; extra: more template variables (tools,
  // enable_thinking ...). Throws kestrel::Error on a template error (e.g. raise_exception), and
  // TemplateBudgetError when the render goes over its budget (RenderLimits::for_input of the
  // conversation's size).
  std::string render(const nlohmann::json& messages, bool add_generation_prompt,
                     const nlohmann::json& extra = nlohmann::json::object()) const;

 private:
  void probe() const;

  std::unique_ptr<ChatTemplate> tmpl_;
  std::string bos_, eos_;
};

}  // namespace kestrel
