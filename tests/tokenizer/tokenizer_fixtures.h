// Where the tokenizer tests find their files: committed fixtures (tests/fixtures/tokenizer) and the real
// vocabularies scripts/fetch_test_vocabs.sh caches.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace kestrel::test {

inline std::filesystem::path tokenizer_fixture_dir() {
  const char* src = std::getenv("KESTREL_SOURCE_DIR");
  return std::filesystem::path(src ? src : KESTREL_SOURCE_DIR) / "tests" / "fixtures" / "tokenizer";
}

inline std::filesystem::path vocab_cache_dir() {
  // An empty KESTREL_CACHE is unset, as for scripts/setup.sh (${KESTREL_CACHE:-...}) and the other tests.
  if (const char* c = std::getenv("KESTREL_CACHE"); c && *c) return std::filesystem::path(c) / "vocab";
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home ? home : "/nonexistent") / ".cache" / "kestrel" / "vocab";
}

inline nlohmann::json read_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  return nlohmann::json::parse(in);
}

inline std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

}  // namespace kestrel::test
