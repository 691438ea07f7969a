// JSON loading for Hugging Face model directories (config.json, tokenizer_config.json, shard indexes).
// Only parsing lives here; model code maps the fields it needs itself.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

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

}  // namespace kestrel
