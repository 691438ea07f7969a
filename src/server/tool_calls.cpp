#include "server/tool_calls.h"

#include <fmt/format.h>

#include "server/api_error.h"
#include "structured/grammar.h"
#include "structured/json_schema.h"

namespace kestrel::server {
namespace {

using nlohmann::json;

constexpr std::string_view kHermesOpen = "<tool_call>", kHermesClose = "</tool_call>";
constexpr std::string_view kPythonTag = "<|python_tag|>", kMistralTag = "[TOOL_CALLS]";
constexpr size_t kMaxTools = 128;

[[noreturn]] void bad(std::string_view param, const std::string& message) {
  throw ApiError(400, message, std::string(param), "invalid_value");
}

const json& function_of(const json& tool) {
  return tool["function"];
}

std::string trim(std::string_view s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return "";
  const size_t e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

// A call's JSON object: {"name": ..., "arguments" | "parameters": {...} or its JSON text}. Ordered, so the
// arguments come back in the order the model wrote them.
using ordered = nlohmann::ordered_json;
std::optional<ToolCall> call_from_json(const ordered& j, const ToolSpec& spec) {
  if (!j.is_object() || !j.contains("name") || !j["name"].is_string()) return std::nullopt;
  ToolCall c;
  c.name = j["name"].get<std::string>();
  bool known = false;
  for (const json& t : spec.tools) known |= function_of(t)["name"] == c.name;
  if (!known) return std::nullopt;
  const ordered* args = j.contains("arguments")    ? &j["arguments"]
                        : j.contains("parameters") ? &j["parameters"]
                                                   : nullptr;
  if (!args || args->is_null()) {
    c.arguments = "{}";
  } else if (args->is_string()) {
    c.arguments = args->get<std::string>();
  } else {
    c.arguments = args->dump();
  }
  return c;
}

std::optional<ordered> parse_json(std::string_view text) {
  try {
    return ordered::parse(text);
  } catch (const ordered::exception&) {
    return std::nullopt;
  }
}

// The call of function i as the format writes it (GBNF), its arguments from rule `args`.
std::string call_rule(ToolFormat format, const std::string& name, const std::string& args) {
  const std::string key = format == ToolFormat::Llama3Json ? "parameters" : "arguments";
  return structured::gbnf_literal("{\"name\": \"" + name + "\", \"" + key + "\": ") + " " + args + " \"}\"";
}

}  // namespace

std::optional<ToolSpec> parse_tool_spec(const json& body) {
  auto it = body.find("tools");
  const bool has_tools = it != body.end() && !it->is_null() && !(it->is_array() && it->empty());
  auto tc = body.find("tool_choice");
  const json* choice = tc != body.end() && !tc->is_null() ? &*tc : nullptr;
  auto pc = body.find("parallel_tool_calls");
  if (pc != body.end() && !pc->is_null() && !pc->is_boolean())
    bad("parallel_tool_calls", "'parallel_tool_calls' must be a boolean");
  if (!has_tools) {
    if (choice && !(choice->is_string() && (*choice == "none" || *choice == "auto")))
      bad("tool_choice", "'tool_choice' names a tool but the request has no 'tools'");
    return std::nullopt;
  }
  if (!it->is_array()) bad("tools", "'tools' must be a list");
  if (it->size() > kMaxTools) bad("tools", fmt::format("at most {} tools", kMaxTools));
  ToolSpec spec;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& t = (*it)[i];
    const std::string param = fmt::format("tools[{}]", i);
    if (!t.is_object() || t.value("type", json()) != "function" || !t.contains("function") ||
        !t["function"].is_object())
      bad(param, "each tool must be {\"type\": \"function\", \"function\": {...}}");
    const json& f = t["function"];
    if (!f.contains("name") || !f["name"].is_string() || f["name"].get<std::string>().empty())
      bad(param + ".function.name", "each function needs a non-empty 'name'");
    const std::string name = f["name"];
    for (char c : name)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.'))
        bad(param + ".function.name", fmt::format("function name '{}': use letters, digits, '_', '-' and '.'", name));
    for (const json& other : spec.tools)
      if (function_of(other)["name"] == name) bad(param + ".function.name", fmt::format("two tools named '{}'", name));
    if (f.contains("parameters") && !f["parameters"].is_null() && !f["parameters"].is_object())
      bad(param + ".function.parameters", "'parameters' must be a JSON schema object");
    spec.tools.push_back(t);
  }
  if (choice) {
    if (choice->is_string()) {
      const std::string c = *choice;
      if (c == "none")
        spec.choice = ToolSpec::Choice::None;
      else if (c == "auto")
        spec.choice = ToolSpec::Choice::Auto;
      else if (c == "required")
        spec.choice = ToolSpec::Choice::Required;
      else
        bad("tool_choice", fmt::format("tool_choice '{}': expected none, auto, required or a function", c));
    } else if (choice->is_object() && choice->value("type", json()) == "function" && choice->contains("function") &&
               (*choice)["function"].is_object() && (*choice)["function"].contains("name") &&
               (*choice)["function"]["name"].is_string()) {
      spec.choice = ToolSpec::Choice::Named;
      spec.named = (*choice)["function"]["name"];
      bool known = false;
      for (const json& t : spec.tools) known |= function_of(t)["name"] == spec.named;
      if (!known) bad("tool_choice", fmt::format("tool_choice names '{}', which is not in 'tools'", spec.named));
    } else {
      bad("tool_choice",
          "'tool_choice' must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\": ...}}");
    }
  }
  if (pc != body.end() && pc->is_boolean()) spec.parallel = pc->get<bool>();
  return spec;
}

ToolTemplate detect_tool_template(std::string_view tmpl) {
  ToolTemplate t;
  const bool mentions_tools = tmpl.find("tools") != std::string_view::npos;
  if (tmpl.find(kHermesOpen) != std::string_view::npos) {
    t = {ToolFormat::Hermes, mentions_tools};
  } else if (tmpl.find(kMistralTag) != std::string_view::npos) {
    t = {ToolFormat::Mistral, mentions_tools};
  } else if (tmpl.find(kPythonTag) != std::string_view::npos ||
             tmpl.find("Environment: ipython") != std::string_view::npos) {
    t = {ToolFormat::Llama3Json, mentions_tools};
  }
  return t;
}

json tool_messages(const json& messages, const ToolSpec& spec, const ToolTemplate& t) {
  json out = json::array();
  if (t.native) {
    for (json m : messages) {
      if (m.contains("tool_calls"))
        for (json& c : m["tool_calls"]) {
          json& f = c["function"];
          if (f["arguments"].is_string())
            if (auto parsed = parse_json(f["arguments"].get<std::string>()))
              f["arguments"] = json::parse(parsed->dump());
        }
      out.push_back(std::move(m));
    }
    return out;
  }
  // Hermes through the system prompt.
  std::string tools_text;
  for (const json& tool : spec.tools) tools_text += tool.dump() + "\n";
  const std::string prompt =
      "You are a function calling AI model. You may call one or more functions to assist with the user query. "
      "Don't make assumptions about what values to plug into functions. Here are the available tools: <tools>\n" +
      tools_text +
      "</tools>\nFor each function call return a JSON object with the function name and arguments within "
      "<tool_call></tool_call> tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n"
      "</tool_call>";
  size_t first = 0;
  if (!messages.empty() && messages[0].value("role", "") == "system") {
    out.push_back({{"role", "system"}, {"content", messages[0].value("content", "") + "\n\n" + prompt}});
    first = 1;
  } else {
    out.push_back({{"role", "system"}, {"content", prompt}});
  }
  for (size_t i = first; i < messages.size(); ++i) {
    const json& m = messages[i];
    const std::string role = m.value("role", "");
    if (role == "tool") {
      out.push_back(
          {{"role", "user"}, {"content", "<tool_response>\n" + m.value("content", "") + "\n</tool_response>"}});
    } else if (m.contains("tool_calls")) {
      std::string text = m.value("content", "");
      for (const json& c : m["tool_calls"]) {
        const json& f = c["function"];
        const std::string args = f["arguments"].is_string() ? f["arguments"].get<std::string>() : f["arguments"].dump();
        ordered call;  // the arguments in the order the caller wrote them
        call["name"] = f["name"].get<std::string>();
        if (auto parsed = parse_json(args))
          call["arguments"] = *parsed;
        else
          call["arguments"] = args;
        text += (text.empty() ? "" : "\n") + std::string("<tool_call>\n") + call.dump() + "\n</tool_call>";
      }
      out.push_back({{"role", role}, {"content", text}});
    } else {
      out.push_back(m);
    }
  }
  return out;
}

std::string prefix_gbnf_rules(std::string_view g, const std::string& prefix) {
  std::string out;
  auto name_char = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'; };
  for (size_t i = 0; i < g.size();) {
    const char c = g[i];
    if (c == '"' || c == '[') {  // a literal or class: copied as is, escapes included
      const char close = c == '"' ? '"' : ']';
      size_t j = i + 1;
      while (j < g.size() && g[j] != close) j += g[j] == '\\' ? 2 : 1;
      out.append(g.substr(i, j + 1 - i));
      i = j + 1;
    } else if (c == '{') {  // repetition bounds
      const size_t j = g.find('}', i);
      out.append(g.substr(i, j == std::string_view::npos ? std::string_view::npos : j + 1 - i));
      i = j == std::string_view::npos ? g.size() : j + 1;
    } else if (c == '#') {
      const size_t j = g.find('\n', i);
      i = j == std::string_view::npos ? g.size() : j;
    } else if (name_char(c)) {
      size_t j = i;
      while (j < g.size() && name_char(g[j])) ++j;
      out += prefix;
      out.append(g.substr(i, j - i));
      i = j;
    } else {
      out += c;
      ++i;
    }
  }
  return out;
}

std::string tool_call_grammar(const ToolSpec& spec, ToolFormat format) {
  std::string rules, alternatives;
  for (size_t i = 0; i < spec.tools.size(); ++i) {
    const json& f = function_of(spec.tools[i]);
    const std::string name = f["name"];
    if (spec.choice == ToolSpec::Choice::Named && name != spec.named) continue;
    const std::string pre = fmt::format("t{}-", i);
    const json params = f.contains("parameters") && f["parameters"].is_object() ? f["parameters"] : json::object();
    const auto ordered = spec.ordered_parameters.find(i);
    const std::string args =
        params.empty() || (params.size() == 1 && params.contains("type") && params["type"] == "object")
            ? structured::json_object_grammar()
            : structured::json_schema_grammar(nlohmann::ordered_json::parse(
                  ordered != spec.ordered_parameters.end() ? ordered->second : params.dump()));
    rules += prefix_gbnf_rules(args, pre);
    alternatives += (alternatives.empty() ? "" : " | ") + call_rule(format, name, pre + "root");
  }
  std::string g = rules + "call ::= " + alternatives + "\n";
  switch (format) {
    case ToolFormat::Hermes:
      g += "one ::= \"<tool_call>\\n\" call \"\\n</tool_call>\"\n";
      g += spec.parallel ? "root ::= one (\"\\n\" one)*\n" : "root ::= one\n";
      break;
    case ToolFormat::Llama3Json: g += spec.parallel ? "root ::= call (\"; \" call)*\n" : "root ::= call\n"; break;
    case ToolFormat::Mistral:  // [TOOL_CALLS] is a special token no grammar can produce: the bare list
      g += spec.parallel ? "root ::= \"[\" call (\", \" call)* \"]\"\n" : "root ::= \"[\" call \"]\"\n";
      break;
  }
  return g;
}

std::optional<ParsedAnswer> parse_tool_calls(std::string_view text, ToolFormat format, const ToolSpec& spec) {
  ParsedAnswer a;
  if (format == ToolFormat::Hermes) {
    size_t at = text.find(kHermesOpen);
    if (at == std::string_view::npos) return std::nullopt;
    a.content = trim(text.substr(0, at));
    while (at != std::string_view::npos) {
      const size_t body = at + kHermesOpen.size();
      size_t end = text.find(kHermesClose, body);
      const auto j =
          parse_json(trim(text.substr(body, end == std::string_view::npos ? std::string_view::npos : end - body)));
      if (!j) return std::nullopt;
      auto call = call_from_json(*j, spec);
      if (!call) return std::nullopt;
      a.calls.push_back(std::move(*call));
      if (end == std::string_view::npos) break;
      at = text.find(kHermesOpen, end + kHermesClose.size());
    }
    return a;
  }
  std::string body = trim(text);
  for (std::string_view tag : {kPythonTag, kMistralTag})
    if (std::string_view(body).starts_with(tag)) body = trim(std::string_view(body).substr(tag.size()));
  std::vector<std::string> pieces;
  if (format == ToolFormat::Llama3Json) {  // one object, or several separated by ';'
    if (auto whole = parse_json(body)) {
      pieces.push_back(body);
    } else {
      size_t from = 0;
      for (size_t semi; (semi = body.find("; {", from)) != std::string::npos; from = semi + 2)
        pieces.push_back(body.substr(from, semi - from));
      pieces.push_back(body.substr(from));
    }
  } else {
    pieces.push_back(body);
  }
  for (const std::string& p : pieces) {
    auto j = parse_json(p);
    if (!j) return std::nullopt;
    const ordered list = j->is_array() ? *j : ordered::array({*j});
    for (const ordered& item : list) {
      auto call = call_from_json(item, spec);
      if (!call) return std::nullopt;
      a.calls.push_back(std::move(*call));
    }
  }
  if (a.calls.empty()) return std::nullopt;
  return a;
}

std::string ToolCallStream::push(std::string_view piece) {
  held_ += piece;
  if (capturing_) return "";
  std::string out;
  if (format_ == ToolFormat::Hermes) {
    const size_t at = held_.find(kHermesOpen);
    if (at != std::string::npos) {
      out = held_.substr(0, at);
      held_.erase(0, at);
      capturing_ = true;
    } else {
      // Keep back a tail that could still become "<tool_call>".
      size_t keep = 0;
      for (size_t n = std::min(held_.size(), kHermesOpen.size() - 1); n > 0; --n)
        if (std::string_view(held_).substr(held_.size() - n) == kHermesOpen.substr(0, n)) {
          keep = n;
          break;
        }
      out = held_.substr(0, held_.size() - keep);
      held_.erase(0, held_.size() - keep);
    }
  } else if (!decided_) {
    // JSON formats: a call is the whole answer, known from its first characters.
    const std::string t = trim(held_);
    if (t.empty()) return "";
    const bool call = t[0] == '{' || t[0] == '[' ||
                      std::string_view(kPythonTag).starts_with(t.substr(0, kPythonTag.size())) ||
                      std::string_view(kMistralTag).starts_with(t.substr(0, kMistralTag.size()));
    if (call && t.size() < std::max(kPythonTag.size(), kMistralTag.size()) && t[0] == '[' &&
        !std::string_view(kMistralTag).starts_with(t))
      return "";
    decided_ = true;
    capturing_ = call;
    if (!call) out.swap(held_);
  } else {
    out.swap(held_);
  }
  sent_any_ |= !out.empty();
  return out;
}

}  // namespace kestrel::server
