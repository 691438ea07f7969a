// Broken copies of committed model fixtures, for the tests of what loading refuses: a fixture copied into a
// scratch directory, then its config.json rewritten or bytes of its files patched in place.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "../formats/test_files.h"
#include "test_paths.h"

namespace kestrel::test {

// A copy of a committed model fixture (a directory or a GGUF file, relative to tests/fixtures/models) in `dir`.
inline std::string copy_fixture(const ScratchDir& dir, const std::string& name) {
  const std::filesystem::path to = dir.dir() / std::filesystem::path(name).filename();
  std::filesystem::copy(fixture("models/" + name), to, std::filesystem::copy_options::recursive);
  return to.string();
}

inline void write_config(const std::string& model_dir, const nlohmann::json& config) {
  const std::string text = config.dump(2);
  write_bytes(model_dir + "/config.json", text.data(), text.size());
}

// Overwrites `n` bytes at `offset` of a file in place.
inline void patch_file(const std::string& path, uint64_t offset, const void* bytes, size_t n) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(static_cast<const char*>(bytes), static_cast<std::streamsize>(n));
  ASSERT_TRUE(f.good()) << "cannot patch " << path;
}

// The JSON header of a safetensors file and where its data starts.
inline std::pair<nlohmann::json, uint64_t> safetensors_header(const std::string& path) {
  const std::vector<uint8_t> bytes = read_bytes(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  return {nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<int64_t>(n)), 8 + n};
}

// File offset of element `index` (of `elem_bytes` bytes) of a tensor in a safetensors file.
inline uint64_t safetensors_offset(const std::string& path, const std::string& tensor, int64_t index,
                                   size_t elem_bytes) {
  const auto [h, data] = safetensors_header(path);
  return data + h.at(tensor).at("data_offsets")[0].get<uint64_t>() + index * elem_bytes;
}

// Replaces every occurrence of `from` in a file's bytes by `to`, of the same length (a tensor name in a
// safetensors header: the file stays valid, the tensor is renamed); expects at least one.
inline void replace_bytes(const std::string& path, const std::string& from, const std::string& to) {
  ASSERT_EQ(from.size(), to.size());
  std::vector<uint8_t> bytes = read_bytes(path);
  int found = 0;
  for (auto it = bytes.begin(); (it = std::search(it, bytes.end(), from.begin(), from.end())) != bytes.end();
       it += static_cast<int64_t>(from.size()), ++found)
    std::copy(to.begin(), to.end(), it);
  ASSERT_GT(found, 0) << from << " not in " << path;
  write_bytes(path, bytes);
}

}  // namespace kestrel::test
