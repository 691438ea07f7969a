// JSON loading for Hugging Face model directories (config.json, tokenizer_config.json, shard indexes).
// Only parsing lives here; model code maps the fields it needs itself.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <type_traits>

namespace kestrel {

// Parses `text`; a syntax error becomes a kestrel::Error naming `source` (a path or a description) with
// the line and column. Nesting deeper than `max_depth` is rejected before parsing, so hostile input
// cannot exhaust the stack.
nlohmann::json parse_json(std::string_view text, std::string_view source, int max_depth = 256);

// Reads and parses a JSON file; a missing or unreadable file and a syntax error give a kestrel::Error
// naming the path.
nlohmann::json load_json_file(const std::string& path);

// Typed reads of config values; `key` and `where` (the file) name the value in errors. nlohmann's own
// get<int>() casts: 2.5 becomes 2 and 2^32 + 128 wraps to 128, so a broken config would load as another
// model. These throw a kestrel::Error instead.
//   json_int: a JSON integer (never a float, even 64.0) in [lo, hi].
//   json_float: any JSON number that an f32 holds (finite; 1e39 is an error, not infinity).
int64_t json_int(const nlohmann::json& value, std::string_view key, std::string_view where, int64_t lo, int64_t hi);
float json_float(const nlohmann::json& value, std::string_view key, std::string_view where);

// The value of `key` in object j, or null when the key is missing or null (transformers treats both as unset).
const nlohmann::json* json_field(const nlohmann::json& j, const char* key);

[[noreturn]] void json_type_error(std::string_view key, std::string_view where, const nlohmann::json& value);
// A string or boolean field, or `def` when unset. nlohmann's get<> does not convert between JSON types, so a
// wrong type throws a kestrel::Error naming the field.
template <typename T>
T json_field_or(const nlohmann::json& j, const char* key, T def, std::string_view where) {
  static_assert(std::is_same_v<T, bool> || std::is_same_v<T, std::string>);
  const nlohmann::json* v = json_field(j, key);
  if (!v) return def;
  if constexpr (std::is_same_v<T, bool>) {
    if (!v->is_boolean()) json_type_error(key, where, *v);
    return v->get<bool>();
  } else {
    if (!v->is_string()) json_type_error(key, where, *v);
    return v->get<std::string>();
  }
}

}  // namespace kestrel
