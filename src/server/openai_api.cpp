#include "server/openai_api.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "server/api_error.h"

namespace kestrel::server {
namespace {

using nlohmann::json;

constexpr size_t kMaxStopStrings = 16;
constexpr size_t kMaxStopLength = 256;
constexpr int kMaxLogprobs = 20;

[[noreturn]] void bad(std::string_view param, const std::string& message) {
  throw ApiError(400, message, std::string(param), "invalid_value");
}

// Each accessor returns nullopt for an absent or null field and rejects a wrong type by name.
const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<double> number(const json& body, const char* name, double lo, double hi) {
  const json* v = field(body, name);
  if (!v) return std::nullopt;
  if (!v->is_number()) bad(name, fmt::format("'{}' must be a number", name));
  const double d = v->get<double>();
  if (!std::isfinite(d) || d < lo || d > hi)
    bad(name, fmt::format("'{}' must be between {} and {}, got {}", name, lo, hi, d));
  return d;
}

std::optional<int64_t> integer(const json& body, const char* name, int64_t lo, int64_t hi) {
  const json* v = field(body, name);
  if (!v) return std::nullopt;
  // JSON has one number type: accept 3.0 but not 3.5.
  if (!v->is_number_integer() && !(v->is_number_float() && std::floor(v->get<double>()) == v->get<double>()))
    bad(name, fmt::format("'{}' must be an integer", name));
  if (v->is_number_float()) {
    const double d = v->get<double>();
    if (d < static_cast<double>(lo) || d > static_cast<double>(hi))
      bad(name, fmt::format("'{}' must be between {} and {}, got {}", name, lo, hi, d));
    return static_cast<int64_t>(d);
  }
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    bad(name, fmt::format("'{}' must be between {} and {}", name, lo, hi));
  const int64_t i = v->get<int64_t>();
  if (i < lo || i > hi) bad(name, fmt::format("'{}' must be between {} and {}, got {}", name, lo, hi, i));
  return i;
}

std::optional<bool> boolean(const json& body, const char* name) {
  const json* v = field(body, name);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) bad(name, fmt::format("'{}' must be true or false", name));
  return v->get<bool>();
}

void parse_prompt(const json& body, GenerationSpec& g) {
  const json* p = field(body, "prompt");
  if (!p) bad("prompt", "'prompt' is required");
  const json* one = p;
  // A batch of prompts would need n choices; one prompt in a list is fine.
  if (p->is_array() && !p->empty() && (p->front().is_string() || p->front().is_array())) {
    if (p->size() != 1) bad("prompt", "only one prompt per request is supported");
    one = &p->front();
  }
  if (one->is_string()) {
    g.prompt_text = one->get<std::string>();
    if (g.prompt_text.empty()) bad("prompt", "'prompt' must not be empty");
  } else if (one->is_array()) {
    g.prompt_tokens = parse_token_ids(*one, "prompt");
    g.prompt_is_tokens = true;
    if (g.prompt_tokens.empty()) bad("prompt", "'prompt' must not be empty");
  } else {
    bad("prompt", "'prompt' must be a string or a list of token ids");
  }
}

// Message content: a string, or a list of {"type": "text", "text": ...} parts (joined).
std::string message_text(const json& content, size_t index) {
  const std::string param = fmt::format("messages[{}].content", index);
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) bad(param, "message content must be a string or a list of text parts");
  std::string text;
  for (const json& part : content) {
    if (!part.is_object() || part.value("type", json()) != "text" || !part.contains("text") ||
        !part["text"].is_string())
      bad(param, "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported");
    text += part["text"].get<std::string>();
  }
  return text;
}

void parse_messages(const json& body, GenerationSpec& g) {
  const json* m = field(body, "messages");
  if (!m) bad("messages", "'messages' is required");
  if (!m->is_array()) bad("messages", "'messages' must be a list");
  if (m->empty()) bad("messages", "'messages' must not be empty");
  g.messages = json::array();
  for (size_t i = 0; i < m->size(); ++i) {
    const json& msg = (*m)[i];
    const std::string param = fmt::format("messages[{}]", i);
    if (!msg.is_object()) bad(param, "each message must be an object");
    auto role = msg.find("role");
    if (role == msg.end() || !role->is_string()) bad(param + ".role", "each message needs a string 'role'");
    const std::string r = role->get<std::string>();
    if (r != "system" && r != "user" && r != "assistant" && r != "developer" && r != "tool")
      bad(param + ".role", fmt::format("unknown role '{}'", r));
    auto content = msg.find("content");
    const bool may_be_empty = r == "assistant";  // an assistant turn may carry only tool calls
    if (content == msg.end() || content->is_null()) {
      if (!may_be_empty) bad(param + ".content", "each message needs 'content'");
      g.messages.push_back({{"role", r}, {"content", ""}});
      continue;
    }
    g.messages.push_back({{"role", r == "developer" ? "system" : r}, {"content", message_text(*content, i)}});
  }
}

void reject_unsupported(const json& body) {
  if (auto n = integer(body, "n", 1, 1 << 20); n && *n != 1) bad("n", "only n=1 is supported");
  if (auto b = integer(body, "best_of", 1, 1 << 20); b && *b != 1) bad("best_of", "only best_of=1 is supported");
  if (boolean(body, "echo").value_or(false)) bad("echo", "'echo' is not supported");
  if (const json* s = field(body, "suffix"); s && !(s->is_string() && s->get<std::string>().empty()))
    bad("suffix", "'suffix' is not supported");
  if (const json* lb = field(body, "logit_bias"); lb && !(lb->is_object() && lb->empty()))
    bad("logit_bias", "'logit_bias' is not supported");
  if (const json* t = field(body, "tools"); t && !(t->is_array() && t->empty()))
    bad("tools", "'tools' is not supported");
  if (const json* rf = field(body, "response_format")) {
    if (!rf->is_object() || rf->value("type", json()) != "text")
      bad("response_format", "only response_format {\"type\": \"text\"} is supported");
  }
}

}  // namespace

json parse_json_body(std::string_view text) {
  // The parser reports a number beyond a double's range (1e400) without saying where, so follow the
  // keys as they go by: the innermost one open names the field.
  std::vector<std::string> keys;
  auto follow = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start)
      keys.emplace_back();
    else if (event == json::parse_event_t::key)
      keys.back() = parsed.get<std::string>();
    else if (event == json::parse_event_t::object_end)
      keys.pop_back();
    return true;
  };
  json body;
  try {
    body = json::parse(text, follow);  // also rejects strings that are not valid UTF-8
  } catch (const json::parse_error& e) {
    throw ApiError(400, fmt::format("the body is not valid JSON: {}", e.what()), "", "invalid_json");
  } catch (const json::out_of_range&) {
    std::string field;
    for (const std::string& k : keys) field += (field.empty() ? "" : ".") + k;
    throw ApiError(400,
                   field.empty() ? "the body holds a number too large to represent"
                                 : fmt::format("'{}' holds a number too large to represent", field),
                   field, "invalid_value");
  }
  if (!body.is_object()) throw ApiError(400, "the body must be a JSON object", "", "invalid_json");
  return body;
}

std::vector<int32_t> parse_token_ids(const json& list, std::string_view param) {
  std::vector<int32_t> out;
  out.reserve(list.size());
  for (const json& t : list) {
    // Unsigned ids past 2^63 would read back negative: check them before the signed view.
    const bool in_range = t.is_number_unsigned() ? t.get<uint64_t>() <= std::numeric_limits<int32_t>::max()
                          : t.is_number_integer()
                              ? t.get<int64_t>() >= 0 && t.get<int64_t>() <= std::numeric_limits<int32_t>::max()
                              : false;
    if (!in_range) bad(param, fmt::format("'{}' must hold token ids (integers from 0 to 2147483647)", param));
    out.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  return out;
}

GenerationSpec parse_generation_request(const json& body, Endpoint endpoint) {
  GenerationSpec g;
  g.endpoint = endpoint;
  if (const json* m = field(body, "model")) {
    if (!m->is_string()) bad("model", "'model' must be a string");
    g.model = m->get<std::string>();
  }
  reject_unsupported(body);
  g.stream = boolean(body, "stream").value_or(false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) bad("stream_options", "'stream_options' must be an object");
    if (!g.stream) bad("stream_options", "'stream_options' is only allowed with stream=true");
    g.include_usage = boolean(*so, "include_usage").value_or(false);
  }

  // max_completion_tokens is the chat API's newer name for max_tokens.
  constexpr int64_t kMaxTokens = 1 << 30;
  auto mt = integer(body, "max_tokens", 1, kMaxTokens);
  if (auto mct = integer(body, "max_completion_tokens", 1, kMaxTokens)) mt = mct;
  if (mt) g.max_tokens = static_cast<int>(*mt);

  SamplingParams& s = g.sampling;
  s.temperature = static_cast<float>(number(body, "temperature", 0, 2).value_or(1.0));
  s.top_p = static_cast<float>(number(body, "top_p", 0, 1).value_or(1.0));
  if (s.top_p <= 0) bad("top_p", "'top_p' must be greater than 0");
  // vLLM spells "off" as -1; the sampler as 0.
  s.top_k = static_cast<int>(std::max<int64_t>(0, integer(body, "top_k", -1, 1 << 20).value_or(0)));
  s.min_p = static_cast<float>(number(body, "min_p", 0, 1).value_or(0.0));
  s.presence_penalty = static_cast<float>(number(body, "presence_penalty", -2, 2).value_or(0.0));
  s.frequency_penalty = static_cast<float>(number(body, "frequency_penalty", -2, 2).value_or(0.0));
  s.repetition_penalty = static_cast<float>(number(body, "repetition_penalty", 0.01, 10).value_or(1.0));
  if (auto seed = integer(body, "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max())) {
    s.seed = static_cast<uint64_t>(*seed);
    g.has_seed = true;
  }

  if (const json* st = field(body, "stop")) {
    if (st->is_string()) {
      g.stop.push_back(st->get<std::string>());
    } else if (st->is_array()) {
      for (const json& x : *st) {
        if (!x.is_string()) bad("stop", "'stop' must be a string or a list of strings");
        g.stop.push_back(x.get<std::string>());
      }
    } else {
      bad("stop", "'stop' must be a string or a list of strings");
    }
    if (g.stop.size() > kMaxStopStrings) bad("stop", fmt::format("at most {} stop strings", kMaxStopStrings));
    for (const std::string& x : g.stop)
      if (x.empty() || x.size() > kMaxStopLength)
        bad("stop", fmt::format("stop strings must be 1 to {} bytes long", kMaxStopLength));
  }
  if (const json* ids = field(body, "stop_token_ids")) {
    if (!ids->is_array()) bad("stop_token_ids", "'stop_token_ids' must be a list of token ids");
    g.stop_token_ids = parse_token_ids(*ids, "stop_token_ids");
  }
  g.ignore_eos = boolean(body, "ignore_eos").value_or(false);

  if (endpoint == Endpoint::Chat) {
    const bool want = boolean(body, "logprobs").value_or(false);
    const auto top = integer(body, "top_logprobs", 0, kMaxLogprobs);
    if (top && !want) bad("top_logprobs", "'top_logprobs' needs logprobs=true");
    if (want) g.logprobs = static_cast<int>(top.value_or(0));
    parse_messages(body, g);
  } else {
    if (auto lp = integer(body, "logprobs", 0, kMaxLogprobs)) g.logprobs = static_cast<int>(*lp);
    parse_prompt(body, g);
  }
  return g;
}

std::string token_piece(const Tokenizer& tok, int32_t id) {
  return tok.token_bytes(id);
}

json usage_json(int prompt_tokens, int completion_tokens, int cached_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", cached_tokens}}}};
}

namespace {

json byte_list(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

}  // namespace

json chat_logprobs_json(const Tokenizer& tok, std::span<const TokenLogprob> lps) {
  json content = json::array();
  for (const TokenLogprob& lp : lps) {
    const std::string piece = token_piece(tok, lp.token);
    json top = json::array();
    for (const auto& [id, logprob] : lp.top) {
      const std::string p = token_piece(tok, id);
      top.push_back({{"token", p}, {"logprob", logprob}, {"bytes", byte_list(p)}});
    }
    content.push_back({{"token", piece}, {"logprob", lp.logprob}, {"bytes", byte_list(piece)}, {"top_logprobs", top}});
  }
  return {{"content", content}};
}

json completion_logprobs_json(const Tokenizer& tok, std::span<const TokenLogprob> lps, size_t& text_offset) {
  json tokens = json::array(), token_logprobs = json::array(), top_logprobs = json::array(), offsets = json::array();
  for (const TokenLogprob& lp : lps) {
    const std::string piece = token_piece(tok, lp.token);
    tokens.push_back(piece);
    token_logprobs.push_back(lp.logprob);
    json top = json::object();
    for (const auto& [id, logprob] : lp.top) top[token_piece(tok, id)] = logprob;
    top_logprobs.push_back(top);
    offsets.push_back(text_offset);
    if (!tok.is_special(lp.token)) text_offset += piece.size();
  }
  return {
      {"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top_logprobs}, {"text_offset", offsets}};
}

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace kestrel::server
