// GGUF (v2/v3, little-endian) reader over a read-only memory map. Every read is bounds-checked against
// the file size: a truncated or corrupt file yields a kestrel::Error naming the file and the problem,
// never a crash or an allocation sized by an untrusted count. Tensors are zero-copy views into the map.
//
// Tensors of ggml types Kestrel can't compute with still open (so `kestrel info` can list them); the
// error comes when such a tensor is requested.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/tensor.h"

namespace kestrel {

class MappedFile;

// Metadata value types; the numbers are the on-disk type ids and also GgufValue's variant indices.
enum class GgufType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};
std::string_view gguf_type_name(GgufType t);

class GgufValue;

// An array value. Scalars are kept packed as on disk (so memory stays proportional to the file, whatever
// the counts say); strings and nested arrays are kept as objects.
class GgufArray {
 public:
  GgufType elem_type() const { return elem_type_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  GgufValue at(size_t i) const;  // throws when i >= size()
  // The elements of a string array (empty for other element types).
  const std::vector<std::string>& strings() const { return strings_; }

 private:
  friend class GgufParser;
  GgufType elem_type_ = GgufType::U8;
  size_t size_ = 0;
  std::vector<uint8_t> packed_;  // scalar elements, little-endian as in the file
  std::vector<std::string> strings_;
  std::vector<GgufValue> arrays_;
};

class GgufValue {
 public:
  // Alternative order matches GgufType so that index() is the type id.
  using Storage = std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool, std::string,
                               GgufArray, uint64_t, int64_t, double>;

  GgufValue() = default;
  explicit GgufValue(Storage v) : v_(std::move(v)) {}

  GgufType type() const { return static_cast<GgufType>(v_.index()); }
  const Storage& storage() const { return v_; }
  template <typename T>
  const T* get_if() const {
    return std::get_if<T>(&v_);
  }
  bool is_integer() const;
  bool is_float() const { return type() == GgufType::F32 || type() == GgufType::F64; }

  // Any integer type as int64 / uint64 when the value fits; nullopt for other types or out of range.
  std::optional<int64_t> as_i64() const;
  std::optional<uint64_t> as_u64() const;
  // f32, f64 or an integer as double; nullopt otherwise.
  std::optional<double> as_f64() const;

  // Human-readable rendering; arrays show at most `max_items` items, strings are quoted and cut at 80
  // characters.
  std::string to_string(size_t max_items = 8) const;

 private:
  Storage v_;
};

struct GgufTensorInfo {
  std::string name;
  uint32_t ggml_type = 0;      // as stored in the file
  std::string type_name;       // "q4_k", "iq2_xxs", "type 99" when unknown to ggml too
  std::optional<DType> dtype;  // nullopt: Kestrel does not support this type
  std::vector<int64_t> shape;  // outermost first (ggml ne[] reversed)
  uint64_t offset = 0;         // from the start of the data section
  uint64_t nbytes = 0;         // 0 when the type's block size is unknown
  int64_t numel() const;
};

class GgufFile {
 public:
  // Maps and parses the file; throws kestrel::Error naming the file on any structural problem.
  static std::shared_ptr<GgufFile> open(const std::string& path);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // file offset of the tensor data section
  size_t file_size() const;

  // ---- metadata ----
  // Keys and values in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const GgufValue* find(std::string_view key) const;
  bool has(std::string_view key) const { return find(key) != nullptr; }

  // Typed getters. The plain form throws when the key is missing; find_* returns nullopt when missing;
  // the two-argument form returns the default when missing. All throw when the key holds a value of
  // the wrong type. Integer getters accept any integer type whose value fits the requested one.
  uint32_t get_u32(std::string_view key) const;
  uint32_t get_u32(std::string_view key, uint32_t def) const;
  std::optional<uint32_t> find_u32(std::string_view key) const;
  int32_t get_i32(std::string_view key) const;
  int32_t get_i32(std::string_view key, int32_t def) const;
  std::optional<int32_t> find_i32(std::string_view key) const;
  uint64_t get_u64(std::string_view key) const;
  uint64_t get_u64(std::string_view key, uint64_t def) const;
  std::optional<uint64_t> find_u64(std::string_view key) const;
  // f32 or f64 (narrowed) values.
  float get_f32(std::string_view key) const;
  float get_f32(std::string_view key, float def) const;
  std::optional<float> find_f32(std::string_view key) const;
  bool get_bool(std::string_view key) const;
  bool get_bool(std::string_view key, bool def) const;
  std::optional<bool> find_bool(std::string_view key) const;
  const std::string& get_string(std::string_view key) const;
  std::string get_string(std::string_view key, std::string_view def) const;
  const std::string* find_string(std::string_view key) const;
  // Arrays; the element type must match (any integer type for i32 when values fit, f32 or f64 for f32).
  std::vector<std::string> get_string_array(std::string_view key) const;
  std::optional<std::vector<std::string>> find_string_array(std::string_view key) const;
  std::vector<int32_t> get_i32_array(std::string_view key) const;
  std::optional<std::vector<int32_t>> find_i32_array(std::string_view key) const;
  std::vector<float> get_f32_array(std::string_view key) const;
  std::optional<std::vector<float>> find_f32_array(std::string_view key) const;

  // ---- tensors ----
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;
  bool has_tensor(std::string_view name) const { return find_tensor(name) != nullptr; }
  // A CPU view into the mapping that keeps it alive. Throws for a missing tensor or an unsupported type.
  Tensor tensor(std::string_view name) const;

 private:
  GgufFile() = default;
  void parse();
  const GgufValue& require(std::string_view key) const;

  std::string path_;
  std::shared_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::map<std::string, size_t, std::less<>> kv_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace kestrel
