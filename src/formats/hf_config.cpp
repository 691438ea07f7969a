#include "formats/hf_config.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/mapped_file.h"

namespace kestrel {
namespace {

// Deepest [ / { nesting outside string literals; stops counting once `limit` is exceeded.
int nesting_depth(std::string_view text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) break;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

// A value for an error message: numbers as written, anything else (possibly huge) by its type.
std::string shown(const nlohmann::json& v) {
  return v.is_number() ? v.dump() : std::string("a JSON ") + v.type_name();
}

}  // namespace

nlohmann::json parse_json(std::string_view text, std::string_view source, int max_depth) {
  KS_CHECK(nesting_depth(text, max_depth) <= max_depth, "{}: JSON nested deeper than {} levels", source, max_depth);
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    // what() reads "[json.exception.parse_error.101] parse error at line 1, column 5: ..."; drop the tag.
    std::string_view msg = e.what();
    if (auto pos = msg.find("] "); msg.starts_with("[json.exception") && pos != std::string_view::npos)
      msg.remove_prefix(pos + 2);
    KS_FAIL("{}: invalid JSON: {}", source, msg);
  }
}

nlohmann::json load_json_file(const std::string& path) {
  const auto file = MappedFile::open(path);
  const std::string_view text(reinterpret_cast<const char*>(file->data()), file->size());
  return parse_json(text, path);
}

int64_t json_int(const nlohmann::json& value, std::string_view key, std::string_view where, int64_t lo, int64_t hi) {
  KS_CHECK(value.is_number_integer(), "{}: '{}' must be an integer, got {}", where, key, shown(value));
  // Non-negative JSON integers are stored unsigned and may exceed int64: check before converting.
  const bool fits = !value.is_number_unsigned() || value.get<uint64_t>() <= std::numeric_limits<int64_t>::max();
  const int64_t v = fits ? value.get<int64_t>() : 0;
  const bool in_range = fits && v >= lo && v <= hi;
  KS_CHECK(in_range, "{}: '{}' must be between {} and {}, got {}", where, key, lo, hi, value.dump());
  return v;
}

float json_float(const nlohmann::json& value, std::string_view key, std::string_view where) {
  KS_CHECK(value.is_number(), "{}: '{}' must be a number, got {}", where, key, shown(value));
  const double d = value.get<double>();
  KS_CHECK(std::isfinite(d) && std::fabs(d) <= std::numeric_limits<float>::max(),
           "{}: '{}' = {} is out of range for a 32-bit float", where, key, value.dump());
  return static_cast<float>(d);
}

const nlohmann::json* json_field(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

void json_type_error(std::string_view key, std::string_view where, const nlohmann::json& value) {
  KS_FAIL("{}: config.json field '{}' has the wrong type ({})", where, key, value.type_name());
}

}  // namespace kestrel
