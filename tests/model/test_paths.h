// Where tests find committed fixtures and the cached default model.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

namespace kestrel::test {

inline std::string source_dir() {
  const char* e = std::getenv("KESTREL_SOURCE_DIR");
#ifdef KESTREL_SOURCE_DIR
  return e ? e : KESTREL_SOURCE_DIR;
#else
  return e ? e : ".";
#endif
}

inline std::string fixture(const std::string& rel) { return source_dir() + "/tests/fixtures/" + rel; }

// The default model if scripts/setup.sh cached it, else empty.
inline std::string default_model() {
  const char* cache = std::getenv("KESTREL_CACHE");
  const char* home = std::getenv("HOME");
  const std::string dir = cache && *cache ? cache : std::string(home ? home : ".") + "/.cache/kestrel";
  const std::string p = dir + "/SmolLM2-135M-Instruct.Q4_1.gguf";
  return std::filesystem::exists(p) ? p : std::string();
}

}  // namespace kestrel::test
