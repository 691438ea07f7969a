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

inline std::string fixture(const std::string& rel) {
  return source_dir() + "/tests/fixtures/" + rel;
}

// Where scripts/setup.sh and scripts/fetch_models.sh cache models.
inline std::string cache_dir() {
  const char* cache = std::getenv("KESTREL_CACHE");
  const char* home = std::getenv("HOME");
  return cache && *cache ? cache : std::string(home ? home : ".") + "/.cache/kestrel";
}

// The default model if scripts/setup.sh cached it, else empty.
inline std::string default_model() {
  const std::string p = cache_dir() + "/SmolLM2-135M-Instruct.Q4_1.gguf";
  return std::filesystem::exists(p) ? p : std::string();
}

}  // namespace kestrel::test
