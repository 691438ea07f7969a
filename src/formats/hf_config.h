// JSON loading for Hugging Face model directories (config.json, tokenizer_config.json, shard indexes).
// Only parsing lives here; model code maps the fields it needs itself.
#pragma once

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

}  // namespace kestrel
