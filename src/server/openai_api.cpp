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
    json out = {{"role", r == "developer" ? "system" : r}, {"content", ""}};
    if (content == msg.end() || content->is_null()) {
      if (!may_be_empty) bad(param + ".content", "each message needs 'content'");
    } else {
      out["content"] = message_text(*content, i);
    }
    if (auto tc = msg.find("tool_calls"); r == "assistant" && tc != msg.end() && !tc->is_null()) {
      if (!tc->is_array()) bad(param + ".tool_calls", "'tool_calls' must be a list");
      json calls = json::array();
      for (const json& c : *tc) {
        if (!c.is_object() || !c.contains("function") || !c["function"].is_object() ||
            !c["function"].contains("name") || !c["function"]["name"].is_string())
          bad(param + ".tool_calls", "each tool call needs {\"function\": {\"name\": ..., \"arguments\": ...}}");
        const json& f = c["function"];
        const json args = f.contains("arguments") ? f["arguments"] : json("{}");
        calls.push_back(
            {{"id", c.value("id", "")},
             {"type", "function"},
             {"function", {{"name", f["name"]}, {"arguments", args.is_string() ? args : json(args.dump())}}}});
      }
      out["tool_calls"] = std::move(calls);
    }
    if (auto id = msg.find("tool_call_id"); r == "tool" && id != msg.end() && id->is_string())
      out["tool_call_id"] = *id;
    if (auto nm = msg.find("name"); nm != msg.end() && nm->is_string()) out["name"] = *nm;
    g.messages.push_back(std::move(out));
  }
}

// Every field a body may carry: read below, refused by name (reject_unsupported), or accepted as harmless
// with the reason docs/server.md gives. Anything else is a 400 naming it, so no option is silently ignored.
enum class Route : uint8_t { Both, Chat, Completions };
struct KnownField {
  const char* name;
  Route route;
};
constexpr KnownField kKnownFields[] = {
    {"model", Route::Both},
    {"stream", Route::Both},
    {"stream_options", Route::Both},
    {"max_tokens", Route::Both},
    {"max_completion_tokens", Route::Both},
    {"temperature", Route::Both},
    {"top_p", Route::Both},
    {"top_k", Route::Both},
    {"min_p", Route::Both},
    {"typical_p", Route::Both},
    {"presence_penalty", Route::Both},
    {"frequency_penalty", Route::Both},
    {"repetition_penalty", Route::Both},
    {"logit_bias", Route::Both},
    {"seed", Route::Both},
    {"stop", Route::Both},
    {"stop_token_ids", Route::Both},
    {"ignore_eos", Route::Both},
    {"min_tokens", Route::Both},
    {"include_stop_str_in_output", Route::Both},
    {"logprobs", Route::Both},
    {"prompt_logprobs", Route::Both},
    {"n", Route::Both},
    {"response_format", Route::Both},
    {"user", Route::Both},
    {"metadata", Route::Both},
    {"store", Route::Both},
    {"service_tier", Route::Both},
    {"prompt", Route::Completions},
    {"best_of", Route::Completions},
    {"echo", Route::Completions},
    {"suffix", Route::Completions},
    {"messages", Route::Chat},
    {"top_logprobs", Route::Chat},
    {"chat_template_kwargs", Route::Chat},
    {"tools", Route::Chat},
    {"tool_choice", Route::Chat},
    {"parallel_tool_calls", Route::Chat},
    {"grammar", Route::Both},
    {"json_schema", Route::Both},
    {"regex", Route::Both},
    {"guided_json", Route::Both},
    {"guided_regex", Route::Both},
    {"guided_choice", Route::Both},
    {"guided_grammar", Route::Both},
    {"guided_decoding_backend", Route::Both},
    {"guided_whitespace_pattern", Route::Both},
    {"structured_outputs", Route::Both},
};

// OpenAI's deprecated function-calling fields: refused by name.
constexpr const char* kNotYet[] = {"functions", "function_call"};

void check_field_names(const json& body, Endpoint endpoint) {
  const Route here = endpoint == Endpoint::Chat ? Route::Chat : Route::Completions;
  const char* route = endpoint == Endpoint::Chat ? "/v1/chat/completions" : "/v1/completions";
  for (const auto& [key, value] : body.items()) {
    bool known = false, elsewhere = false;
    for (const char* name : kNotYet)
      if (key == name) {
        if (!value.is_null())
          bad(key, fmt::format("'{}' is not supported (OpenAI's deprecated spelling: use 'tools')", key));
        known = true;  // null: absent
      }
    for (const KnownField& f : kKnownFields)
      if (key == f.name) (f.route == Route::Both || f.route == here ? known : elsewhere) = true;
    if (known) continue;
    if (elsewhere) bad(key, fmt::format("'{}' is not a field of {}", key, route));
    throw ApiError(400, fmt::format("unknown field '{}': every field is used or refused, never ignored", key), key,
                   "unknown_parameter");
  }
}

std::vector<std::pair<int32_t, float>> parse_logit_bias(const json& body) {
  constexpr size_t kMaxBiases = 1024;
  std::vector<std::pair<int32_t, float>> out;
  const json* lb = field(body, "logit_bias");
  if (!lb) return out;
  if (!lb->is_object()) bad("logit_bias", "'logit_bias' must map token ids (as strings) to numbers");
  if (lb->size() > kMaxBiases) bad("logit_bias", fmt::format("at most {} logit_bias entries", kMaxBiases));
  for (const auto& [key, value] : lb->items()) {
    const bool digits = !key.empty() && key.size() <= 10 && key.find_first_not_of("0123456789") == std::string::npos;
    const int64_t id = digits ? std::stoll(key) : -1;
    if (id < 0 || id > std::numeric_limits<int32_t>::max())
      bad("logit_bias", fmt::format("logit_bias key '{}' is not a token id", key));
    if (!value.is_number() || !std::isfinite(value.get<double>()) || std::fabs(value.get<double>()) > 100)
      bad("logit_bias", fmt::format("logit_bias for token {} must be a number from -100 to 100", key));
    out.emplace_back(static_cast<int32_t>(id), value.get<float>());
  }
  return out;
}

void reject_unsupported(const json& body) {
  if (auto n = integer(body, "n", 1, 1 << 20); n && *n != 1) bad("n", "only n=1 is supported");
  if (auto b = integer(body, "best_of", 1, 1 << 20); b && *b != 1) bad("best_of", "only best_of=1 is supported");
  if (boolean(body, "echo").value_or(false)) bad("echo", "'echo' is not supported");
  if (const json* s = field(body, "suffix"); s && !(s->is_string() && s->get<std::string>().empty()))
    bad("suffix", "'suffix' is not supported");
  if (auto tp = number(body, "typical_p", 0, 1); tp && *tp != 1.0)
    bad("typical_p", "only typical_p=1 (off) is supported");
  if (field(body, "prompt_logprobs")) bad("prompt_logprobs", "'prompt_logprobs' is not supported");
  // Accepted as harmless (docs/server.md): user and metadata label a request for the caller's own records,
  // one service tier exists, and store=false is the only behaviour there is.
  if (const json* u = field(body, "user"); u && !u->is_string()) bad("user", "'user' must be a string");
  if (const json* md = field(body, "metadata"); md && !md->is_object()) bad("metadata", "'metadata' must be an object");
  if (boolean(body, "store").value_or(false)) bad("store", "nothing is stored: only store=false is supported");
  if (const json* st = field(body, "service_tier"); st && !(st->is_string() && (*st == "auto" || *st == "default")))
    bad("service_tier", "one service tier: 'auto' or 'default'");
}

// The body again with its keys in their sent order (for schemas), when its text is at hand.
struct OrderedBody {
  std::string_view raw;
  std::optional<nlohmann::ordered_json> doc;
  // The value at `pointer` as JSON text in sent order; empty when unavailable.
  std::string at(const std::string& pointer) {
    if (raw.empty()) return "";
    if (!doc) {
      try {
        doc = nlohmann::ordered_json::parse(raw);
      } catch (const nlohmann::ordered_json::exception&) {
        raw = {};
        return "";
      }
    }
    const nlohmann::ordered_json::json_pointer p(pointer);
    return doc->contains(p) ? (*doc)[p].dump() : "";
  }
};
// A schema given as an object or as JSON text (vLLM accepts both), as JSON text; `pointer` locates it in
// the body, to keep its declared key order.
std::string schema_text(const json& v, const std::string& param, OrderedBody& ordered, const std::string& pointer) {
  if (v.is_object() || v.is_boolean()) {
    if (std::string text = ordered.at(pointer); !text.empty()) return text;
    return v.dump();
  }
  if (v.is_string()) {
    try {
      const json parsed = json::parse(v.get<std::string>());
      if (parsed.is_object() || parsed.is_boolean()) return parsed.dump();
    } catch (const json::exception&) {
    }
  }
  bad(param, fmt::format("'{}' must be a JSON schema (an object, or its JSON text)", param));
}

std::string string_field(const json& v, const std::string& param) {
  if (!v.is_string() || v.get<std::string>().empty()) bad(param, fmt::format("'{}' must be a non-empty string", param));
  return v.get<std::string>();
}

std::vector<std::string> choice_list(const json& v, const std::string& param) {
  if (!v.is_array() || v.empty()) bad(param, fmt::format("'{}' must be a non-empty list of strings", param));
  std::vector<std::string> out;
  for (const json& c : v) out.push_back(string_field(c, param + "[]"));
  return out;
}

// The one output constraint a body asks for, under any of the spellings the peers accept.
void parse_constraint(const json& body, GenerationSpec& g, OrderedBody& ordered) {
  auto set = [&](const std::string& param, ConstraintKind kind, std::string text,
                 std::vector<std::string> choices = {}) {
    if (g.constraint)
      bad(param, fmt::format("'{}' and '{}' both constrain the output; give one", g.constraint_field, param));
    g.constraint = ConstraintSpec{kind, std::move(text), std::move(choices)};
    g.constraint_field = param;
  };
  if (const json* rf = field(body, "response_format")) {
    if (!rf->is_object() || !rf->contains("type") || !(*rf)["type"].is_string())
      bad("response_format", "'response_format' must be an object with a 'type'");
    const std::string type = (*rf)["type"];
    if (type == "json_object") {
      // llama.cpp also takes a schema here.
      if (const json* s = field(*rf, "schema"))
        set("response_format", ConstraintKind::JsonSchema,
            schema_text(*s, "response_format.schema", ordered, "/response_format/schema"));
      else
        set("response_format", ConstraintKind::JsonObject, "");
    } else if (type == "json_schema") {
      const json* js = field(*rf, "json_schema");
      if (!js || !js->is_object()) bad("response_format", "response_format json_schema needs a 'json_schema' object");
      const json* s = field(*js, "schema");
      if (!s) bad("response_format", "response_format.json_schema needs a 'schema'");
      set("response_format", ConstraintKind::JsonSchema,
          schema_text(*s, "response_format.json_schema.schema", ordered, "/response_format/json_schema/schema"));
    } else if (type != "text") {
      bad("response_format", fmt::format("response_format type '{}': expected text, json_object or json_schema", type));
    }
  }
  if (const json* v = field(body, "grammar")) set("grammar", ConstraintKind::Grammar, string_field(*v, "grammar"));
  if (const json* v = field(body, "json_schema"))
    set("json_schema", ConstraintKind::JsonSchema, schema_text(*v, "json_schema", ordered, "/json_schema"));
  if (const json* v = field(body, "regex")) set("regex", ConstraintKind::Regex, string_field(*v, "regex"));
  if (const json* v = field(body, "guided_json"))
    set("guided_json", ConstraintKind::JsonSchema, schema_text(*v, "guided_json", ordered, "/guided_json"));
  if (const json* v = field(body, "guided_regex"))
    set("guided_regex", ConstraintKind::Regex, string_field(*v, "guided_regex"));
  if (const json* v = field(body, "guided_choice"))
    set("guided_choice", ConstraintKind::Choice, "", choice_list(*v, "guided_choice"));
  if (const json* v = field(body, "guided_grammar"))
    set("guided_grammar", ConstraintKind::Grammar, string_field(*v, "guided_grammar"));
  if (const json* so = field(body, "structured_outputs")) {
    if (!so->is_object()) bad("structured_outputs", "'structured_outputs' must be an object");
    for (const auto& [key, v] : so->items()) {
      const std::string param = "structured_outputs." + key;
      if (v.is_null()) continue;
      if (key == "json")
        set(param, ConstraintKind::JsonSchema, schema_text(v, param, ordered, "/structured_outputs/json"));
      else if (key == "regex")
        set(param, ConstraintKind::Regex, string_field(v, param));
      else if (key == "choice")
        set(param, ConstraintKind::Choice, "", choice_list(v, param));
      else if (key == "grammar")
        set(param, ConstraintKind::Grammar, string_field(v, param));
      else if (key == "json_object") {
        if (!v.is_boolean()) bad(param, fmt::format("'{}' must be a boolean", param));
        if (v.get<bool>()) set(param, ConstraintKind::JsonObject, "");
      } else {
        bad(param, fmt::format("'{}' is not supported (json, regex, choice, grammar and json_object are)", param));
      }
    }
  }
  // One implementation exists, so naming a backend changes nothing; a custom whitespace pattern would.
  if (const json* v = field(body, "guided_decoding_backend"); v && !v->is_string())
    bad("guided_decoding_backend", "'guided_decoding_backend' must be a string");
  if (field(body, "guided_whitespace_pattern"))
    bad("guided_whitespace_pattern",
        "'guided_whitespace_pattern' is not supported (whitespace is bounded by the JSON grammar)");
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

GenerationSpec parse_generation_request(const json& body, Endpoint endpoint, const SamplingParams& defaults,
                                        std::string_view raw) {
  OrderedBody ordered{raw, std::nullopt};
  GenerationSpec g;
  g.endpoint = endpoint;
  if (const json* m = field(body, "model")) {
    if (!m->is_string()) bad("model", "'model' must be a string");
    g.model = m->get<std::string>();
  }
  check_field_names(body, endpoint);
  reject_unsupported(body);
  parse_constraint(body, g, ordered);
  if (endpoint == Endpoint::Chat) {
    g.tools = parse_tool_spec(body);
    if (g.tools)  // the parameters' schemas in their declared order too
      for (size_t i = 0; i < g.tools->tools.size(); ++i) {
        const std::string text = ordered.at(fmt::format("/tools/{}/function/parameters", i));
        if (!text.empty()) g.tools->ordered_parameters[i] = text;
      }
  }
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
  s = defaults;
  s.seed = 0;
  if (auto v = number(body, "temperature", 0, 2)) s.temperature = static_cast<float>(*v);
  if (auto v = number(body, "top_p", 0, 1)) s.top_p = static_cast<float>(*v);
  if (s.top_p <= 0) bad("top_p", "'top_p' must be greater than 0");
  // vLLM spells "off" as -1; the sampler as 0.
  if (auto v = integer(body, "top_k", -1, 1 << 20)) s.top_k = static_cast<int>(std::max<int64_t>(0, *v));
  if (auto v = number(body, "min_p", 0, 1)) s.min_p = static_cast<float>(*v);
  if (auto v = number(body, "presence_penalty", -2, 2)) s.presence_penalty = static_cast<float>(*v);
  if (auto v = number(body, "frequency_penalty", -2, 2)) s.frequency_penalty = static_cast<float>(*v);
  if (auto v = number(body, "repetition_penalty", 0.01, 10)) s.repetition_penalty = static_cast<float>(*v);
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
  g.include_stop_str = boolean(body, "include_stop_str_in_output").value_or(false);
  s.logit_bias = parse_logit_bias(body);
  if (auto mn = integer(body, "min_tokens", 0, kMaxTokens)) {
    if (g.max_tokens && *mn > *g.max_tokens) bad("min_tokens", "'min_tokens' must not exceed max_tokens");
    s.min_tokens = static_cast<int>(*mn);
  }

  if (endpoint == Endpoint::Chat) {
    const bool want = boolean(body, "logprobs").value_or(false);
    const auto top = integer(body, "top_logprobs", 0, kMaxLogprobs);
    if (top && !want) bad("top_logprobs", "'top_logprobs' needs logprobs=true");
    if (want) g.logprobs = static_cast<int>(top.value_or(0));
    parse_messages(body, g);
    if (const json* kw = field(body, "chat_template_kwargs")) {
      if (!kw->is_object()) bad("chat_template_kwargs", "'chat_template_kwargs' must be an object");
      for (const char* set : {"messages", "add_generation_prompt", "bos_token", "eos_token"})
        if (kw->contains(set)) bad("chat_template_kwargs", fmt::format("'{}' is set by the server", set));
      g.template_kwargs = *kw;
    }
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
