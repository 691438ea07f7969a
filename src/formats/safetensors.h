// safetensors reader and writer: single files (8-byte little-endian header length, JSON header, data) and Hugging
// Face model directories (model.safetensors, or model.safetensors.index.json naming shards). Tensors are
// zero-copy views into the memory-mapped files. The header is validated completely at open (offsets in
// range, consistent with shape and dtype, no overlaps); dtypes Kestrel does not load (F64, U8, F8 ...)
// still open and fail only when such a tensor is requested.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"

namespace kestrel {

class MappedFile;

struct SafetensorsTensorInfo {
  std::string name;
  std::string dtype_name;       // as in the header: "F32", "BF16", "F8_E4M3" ...
  std::optional<DType> dtype;   // nullopt: Kestrel does not load this dtype
  std::vector<int64_t> shape;   // outermost first; empty for a scalar
  uint64_t begin = 0, end = 0;  // byte range within the data section that follows the header
  uint64_t nbytes() const { return end - begin; }
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Maps and validates the file; throws kestrel::Error naming the file on any problem.
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }  // "__metadata__"
  const std::vector<SafetensorsTensorInfo>& tensors() const { return tensors_; }    // sorted by name
  const SafetensorsTensorInfo* find(std::string_view name) const;
  // A CPU view into the mapping (kept alive by the view). Data that is not aligned to the element size
  // in the file is copied into an aligned host buffer instead. Throws for a missing name or a dtype
  // Kestrel does not load.
  Tensor tensor(std::string_view name) const;

 private:
  SafetensorsFile() = default;
  void parse();

  std::string path_;
  std::shared_ptr<MappedFile> file_;
  uint64_t data_offset_ = 0;
  std::map<std::string, std::string> metadata_;
  std::vector<SafetensorsTensorInfo> tensors_;
};

// All tensors of a model, over one file or the shards of an index.
class SafetensorsModel {
 public:
  // `dir` holds model.safetensors.index.json (sharded; preferred when present) or model.safetensors.
  static std::shared_ptr<SafetensorsModel> open_dir(const std::string& dir);
  // One .safetensors file as a whole model.
  static std::shared_ptr<SafetensorsModel> open_file(const std::string& path);

  const std::string& path() const { return path_; }  // the directory or file opened
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const { return files_; }
  bool has(std::string_view name) const { return find(name) != nullptr; }
  const SafetensorsTensorInfo* find(std::string_view name) const;
  std::vector<std::string> names() const;  // sorted
  Tensor tensor(std::string_view name) const;

 private:
  SafetensorsModel() = default;
  void add_file(std::shared_ptr<SafetensorsFile> file);

  struct Entry {
    const SafetensorsFile* file;
    const SafetensorsTensorInfo* info;
  };
  std::string path_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, Entry, std::less<>> index_;
};

// The header's name of a dtype ("F32", "BF16", "I32" ...); throws for a type safetensors has none for (GGUF
// blocks, packed codes).
const char* safetensors_dtype_name(DType dtype);

// Writes host tensors (contiguous, of dtypes safetensors names) into one safetensors file, in the order
// given, whole or not at all (formats/output_file.h). Throws naming the path or the tensor.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors);

}  // namespace kestrel
