// Read-only memory map of a whole file. Parsers take a std::span over it and bounds-check every access.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace kestrel {

class MappedFile {
 public:
  // Throws kestrel::Error with the path and reason when the file can't be opened or mapped.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

}  // namespace kestrel
