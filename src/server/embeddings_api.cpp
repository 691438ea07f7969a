#include "server/embeddings_api.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <bit>
#include <cmath>
#include <cstring>

#include "server/api_error.h"
#include "server/openai_api.h"

namespace kestrel::server {
namespace {

using nlohmann::json;

[[noreturn]] void bad(std::string_view param, const std::string& message) {
  throw ApiError(400, message, std::string(param), "invalid_value");
}

constexpr const char* kFields[] = {"model", "input", "encoding_format", "dimensions", "user"};

// A non-empty list of token ids; `param` names it in errors.
std::vector<int32_t> token_list(const json& list, const std::string& param) {
  if (list.empty()) bad(param, fmt::format("'{}' must not be an empty list of token ids", param));
  return parse_token_ids(list, param);
}

EmbeddingInput text_input(const json& v, const std::string& param) {
  // OpenAI refuses empty strings: an empty text has no meaning to embed.
  if (v.get_ref<const std::string&>().empty()) bad(param, fmt::format("'{}' must not be an empty string", param));
  return {v.get<std::string>(), {}, false};
}

std::vector<EmbeddingInput> parse_input(const json& body) {
  auto it = body.find("input");
  if (it == body.end() || it->is_null()) bad("input", "'input' is required");
  const json& in = *it;
  constexpr const char* kShapes =
      "'input' must be a string, a list of strings, a list of token ids, or a list of lists of token ids";
  if (in.is_string()) return {text_input(in, "input")};
  if (!in.is_array()) bad("input", kShapes);
  if (in.empty()) bad("input", "'input' must not be an empty list");
  if (in.front().is_number()) return {{"", token_list(in, "input"), true}};
  if (in.size() > kMaxEmbeddingInputs)
    bad("input", fmt::format("at most {} inputs per request, got {}", kMaxEmbeddingInputs, in.size()));
  std::vector<EmbeddingInput> out;
  out.reserve(in.size());
  const bool texts = in.front().is_string();
  for (size_t i = 0; i < in.size(); ++i) {
    const std::string param = fmt::format("input[{}]", i);
    // One kind per list, as OpenAI's schema has it: strings, or lists of token ids.
    if (texts && in[i].is_string())
      out.push_back(text_input(in[i], param));
    else if (!texts && in[i].is_array())
      out.push_back({"", token_list(in[i], param), true});
    else
      bad(param, std::string(kShapes) + " (not a mix)");
  }
  return out;
}

}  // namespace

EmbeddingSpec parse_embedding_request(const json& body) {
  for (const auto& [key, value] : body.items()) {
    bool known = false;
    for (const char* f : kFields) known |= key == f;
    if (!known)
      throw ApiError(400,
                     fmt::format("unknown field '{}' for /v1/embeddings (model, input, encoding_format, dimensions "
                                 "and user are supported)",
                                 key),
                     key, "unknown_parameter");
  }
  EmbeddingSpec s;
  if (auto m = body.find("model"); m != body.end() && !m->is_null()) {
    if (!m->is_string()) bad("model", "'model' must be a string");
    s.model = m->get<std::string>();
  }
  if (auto u = body.find("user"); u != body.end() && !u->is_null() && !u->is_string())
    bad("user", "'user' must be a string");
  if (auto f = body.find("encoding_format"); f != body.end() && !f->is_null()) {
    if (!f->is_string() || (*f != "float" && *f != "base64"))
      bad("encoding_format", "'encoding_format' must be \"float\" or \"base64\"");
    s.base64 = *f == "base64";
  }
  if (auto d = body.find("dimensions"); d != body.end() && !d->is_null()) {
    const bool whole = d->is_number_integer() || (d->is_number_float() && std::isfinite(d->get<double>()) &&
                                                  std::floor(d->get<double>()) == d->get<double>());
    if (!whole) bad("dimensions", "'dimensions' must be an integer");
    const double n = d->get<double>();
    // The upper bound is the model's, checked by the server; this one only keeps the value an int.
    if (n < 1 || n > (1 << 24))
      bad("dimensions", fmt::format("'dimensions' must be between 1 and the model's dimensions, got {}", n));
    s.dimensions = static_cast<int>(n);
  }
  s.inputs = parse_input(body);
  return s;
}

void shorten_embedding(std::vector<float>& v, size_t n, bool normalize) {
  if (n < v.size()) v.resize(n);
  if (!normalize) return;
  double ss = 0;
  for (float f : v) ss += static_cast<double>(f) * f;
  const double norm = std::max(std::sqrt(ss), 1e-12);  // as the encoder's own normalization
  for (float& f : v) f = static_cast<float>(f / norm);
}

std::string base64_floats(std::span<const float> v) {
  static_assert(std::endian::native == std::endian::little, "base64 embeddings are little-endian float32 bytes");
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const auto* p = reinterpret_cast<const unsigned char*>(v.data());
  const size_t n = v.size() * sizeof(float);
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  for (size_t i = 0; i < n; i += 3) {
    const uint32_t b = (uint32_t{p[i]} << 16) | (i + 1 < n ? uint32_t{p[i + 1]} << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
    out += kAlphabet[(b >> 18) & 63];
    out += kAlphabet[(b >> 12) & 63];
    out += i + 1 < n ? kAlphabet[(b >> 6) & 63] : '=';
    out += i + 2 < n ? kAlphabet[b & 63] : '=';
  }
  return out;
}

std::string embeddings_response(std::span<const std::vector<float>> vectors, bool base64, std::string_view model,
                                int64_t prompt_tokens) {
  // Built by hand: fmt prints each float in its shortest round-tripping form, nlohmann the double's
  // (twice the bytes for 2048 x 384 floats).
  std::string out = R"({"object":"list","data":[)";
  for (size_t i = 0; i < vectors.size(); ++i) {
    out += fmt::format(R"({}{{"object":"embedding","index":{},"embedding":)", i ? "," : "", i);
    if (base64)
      out += '"' + base64_floats(vectors[i]) + '"';
    else
      out += fmt::format("[{}]", fmt::join(vectors[i], ","));
    out += '}';
  }
  out += fmt::format(R"(],"model":{},"usage":{{"prompt_tokens":{},"total_tokens":{}}}}})", dump(json(model)),
                     prompt_tokens, prompt_tokens);
  return out;
}

}  // namespace kestrel::server
