#include "formats/hf_config.h"

#include <algorithm>

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

}  // namespace kestrel
