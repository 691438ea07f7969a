// Writing a model file whole or not at all: bytes go to PATH.tmp, which is renamed into place only once
// complete (a failed write removes it), so a reader never sees half a file. The GGUF and safetensors
// writers share it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.h"

namespace kestrel {

class OutputFile {
 public:
  explicit OutputFile(const std::string& path) : path_(path), f_(path, std::ios::binary | std::ios::trunc) {
    KS_CHECK(f_.good(), "cannot create '{}'", path);
  }
  void bytes(const void* p, size_t n) {
    f_.write(static_cast<const char*>(p), static_cast<std::streamsize>(n));
    KS_CHECK(f_.good(), "writing '{}' failed (disk full?)", path_);
    pos_ += n;
  }
  template <typename T>
  void scalar(T v) {
    bytes(&v, sizeof v);
  }
  void string(const std::string& s) {
    scalar<uint64_t>(s.size());
    bytes(s.data(), s.size());
  }
  void pad_to(uint64_t alignment) {
    static const char zeros[256] = {};
    while (pos_ % alignment) bytes(zeros, std::min<uint64_t>(sizeof zeros, alignment - pos_ % alignment));
  }
  void close() {
    f_.close();
    KS_CHECK(!f_.fail(), "closing '{}' failed", path_);
  }

 private:
  std::string path_;
  std::ofstream f_;
  uint64_t pos_ = 0;
};

// Calls write(file) on PATH.tmp, then renames it to `path`; on any error removes it and rethrows.
template <typename Fn>
void write_file_atomically(const std::string& path, Fn&& write) {
  const std::string tmp = path + ".tmp";
  try {
    OutputFile o(tmp);
    write(o);
    o.close();
    std::filesystem::rename(tmp, path);
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
}

}  // namespace kestrel
