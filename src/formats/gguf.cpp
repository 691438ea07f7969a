#include "formats/gguf.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <span>
#include <type_traits>

#include "core/error.h"
#include "core/mapped_file.h"

namespace kestrel {

static_assert(std::endian::native == std::endian::little, "the GGUF reader assumes a little-endian host");

namespace {

constexpr char kMagic[4] = {'G', 'G', 'U', 'F'};
constexpr int kMaxDims = 4;        // GGML_MAX_DIMS
constexpr int kMaxArrayDepth = 8;  // nesting that real files never approach; bounds recursion
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint64_t kMaxAlignment = uint64_t{1} << 30;
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;  // empty name, 1 dim, type, offset
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;                  // empty key, type, 1-byte value
// Objects are several times larger than their smallest encoding, so even a count that passes the
// remaining-bytes check is only trusted this far up front; beyond it, vectors grow as items really parse.
constexpr uint64_t kMaxUpfrontReserve = 1 << 16;

// ggml types Kestrel has no DType for: enough to size them (bounds checks) and name them in errors.
struct OtherGgmlType {
  uint32_t id;
  std::string_view name;
  uint64_t block_size;
  uint64_t block_bytes;
};
constexpr OtherGgmlType kOtherGgmlTypes[] = {
    {6, "q5_0", 32, 22},      {7, "q5_1", 32, 24},      {10, "q2_k", 256, 84},   {11, "q3_k", 256, 110},
    {13, "q5_k", 256, 176},   {16, "iq2_xxs", 256, 66}, {17, "iq2_xs", 256, 74}, {18, "iq3_xxs", 256, 98},
    {19, "iq1_s", 256, 50},   {20, "iq4_nl", 32, 18},   {21, "iq3_s", 256, 110}, {22, "iq2_s", 256, 82},
    {23, "iq4_xs", 256, 136}, {25, "i16", 1, 2},        {27, "i64", 1, 8},       {28, "f64", 1, 8},
    {29, "iq1_m", 256, 56},   {34, "tq1_0", 256, 54},   {35, "tq2_0", 256, 66},  {39, "mxfp4", 32, 17},
};

size_t scalar_size(GgufType t) {
  switch (t) {
    case GgufType::U8:
    case GgufType::I8:
    case GgufType::Bool: return 1;
    case GgufType::U16:
    case GgufType::I16: return 2;
    case GgufType::U32:
    case GgufType::I32:
    case GgufType::F32: return 4;
    case GgufType::U64:
    case GgufType::I64:
    case GgufType::F64: return 8;
    default: return 0;
  }
}

// Smallest number of bytes one value of type t occupies on disk (its length prefix for strings and arrays).
uint64_t min_value_bytes(GgufType t) {
  if (t == GgufType::String) return 8;
  if (t == GgufType::Array) return 4 + 8;
  return scalar_size(t);
}

GgufType checked_type(uint32_t id) {
  KS_CHECK(id <= static_cast<uint32_t>(GgufType::F64), "unknown metadata value type {}", id);
  return static_cast<GgufType>(id);
}

// Sequential little-endian reads over the mapped bytes; every read checks the remaining length first.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> bytes) : bytes_(bytes) {}

  size_t pos() const { return pos_; }
  uint64_t remaining() const { return bytes_.size() - pos_; }

  void need(uint64_t n, std::string_view what) const {
    KS_CHECK(n <= remaining(), "truncated: {} needs {} bytes at offset {} but only {} remain", what, n, pos_,
             remaining());
  }

  template <typename T>
  T read(std::string_view what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::span<const uint8_t> read_bytes(uint64_t n, std::string_view what) {
    need(n, what);
    auto s = bytes_.subspan(pos_, n);
    pos_ += n;
    return s;
  }

  std::string read_string(std::string_view what) {
    const auto n = read<uint64_t>(what);
    auto s = read_bytes(n, what);
    return std::string(reinterpret_cast<const char*>(s.data()), s.size());
  }

  // Checks that `count` items of at least `min_bytes` each can still fit, before anything is reserved.
  void need_items(uint64_t count, uint64_t min_bytes, std::string_view what) const {
    KS_CHECK(min_bytes == 0 || count <= remaining() / min_bytes,
             "{} count {} is impossible: {} items need at least {} bytes each but only {} bytes remain", what, count,
             count, min_bytes, remaining());
  }

 private:
  std::span<const uint8_t> bytes_;
  size_t pos_ = 0;
};

template <typename T>
GgufValue scalar_from_bytes(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return GgufValue(GgufValue::Storage(std::in_place_type<T>, v));
}

GgufValue scalar_value(GgufType t, const uint8_t* p) {
  switch (t) {
    case GgufType::U8: return scalar_from_bytes<uint8_t>(p);
    case GgufType::I8: return scalar_from_bytes<int8_t>(p);
    case GgufType::U16: return scalar_from_bytes<uint16_t>(p);
    case GgufType::I16: return scalar_from_bytes<int16_t>(p);
    case GgufType::U32: return scalar_from_bytes<uint32_t>(p);
    case GgufType::I32: return scalar_from_bytes<int32_t>(p);
    case GgufType::F32: return scalar_from_bytes<float>(p);
    case GgufType::Bool: return GgufValue(GgufValue::Storage(std::in_place_type<bool>, *p != 0));
    case GgufType::U64: return scalar_from_bytes<uint64_t>(p);
    case GgufType::I64: return scalar_from_bytes<int64_t>(p);
    case GgufType::F64: return scalar_from_bytes<double>(p);
    default: KS_FAIL("internal: {} is not a scalar type", gguf_type_name(t));
  }
}

std::string type_description(const GgufValue& v) {
  if (const auto* a = v.get_if<GgufArray>()) return fmt::format("array of {}", gguf_type_name(a->elem_type()));
  return std::string(gguf_type_name(v.type()));
}

bool checked_mul(uint64_t a, uint64_t b, uint64_t& out) {
  return !__builtin_mul_overflow(a, b, &out);
}

}  // namespace

// Builds values from the reader; a friend of GgufArray so arrays can be filled in place.
class GgufParser {
 public:
  static GgufValue read_value(Reader& r, GgufType t, int depth) {
    switch (t) {
      case GgufType::String: return GgufValue(GgufValue::Storage(r.read_string("string value")));
      case GgufType::Array: return GgufValue(GgufValue::Storage(read_array(r, depth + 1)));
      default: return scalar_value(t, r.read_bytes(scalar_size(t), "scalar value").data());
    }
  }

 private:
  static GgufArray read_array(Reader& r, int depth) {
    KS_CHECK(depth <= kMaxArrayDepth, "arrays nested deeper than {} levels", kMaxArrayDepth);
    GgufArray a;
    a.elem_type_ = checked_type(r.read<uint32_t>("array element type"));
    const auto count = r.read<uint64_t>("array length");
    r.need_items(count, min_value_bytes(a.elem_type_), "array");
    a.size_ = static_cast<size_t>(count);
    if (a.elem_type_ == GgufType::String) {
      a.strings_.reserve(std::min(count, kMaxUpfrontReserve));
      for (size_t i = 0; i < a.size_; ++i) a.strings_.push_back(r.read_string("array string"));
    } else if (a.elem_type_ == GgufType::Array) {
      a.arrays_.reserve(std::min(count, kMaxUpfrontReserve));
      for (size_t i = 0; i < a.size_; ++i) a.arrays_.emplace_back(GgufValue::Storage(read_array(r, depth + 1)));
    } else {
      auto bytes = r.read_bytes(count * scalar_size(a.elem_type_), "array data");
      a.packed_.assign(bytes.begin(), bytes.end());
    }
    return a;
  }
};

std::string_view gguf_type_name(GgufType t) {
  static constexpr std::string_view kNames[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                                "bool", "string", "array", "u64", "i64", "f64"};
  const auto i = static_cast<size_t>(t);
  return i < std::size(kNames) ? kNames[i] : "invalid";
}

GgufValue GgufArray::at(size_t i) const {
  KS_CHECK(i < size_, "array index {} out of range for an array of {} items", i, size_);
  if (elem_type_ == GgufType::String) return GgufValue(GgufValue::Storage(strings_[i]));
  if (elem_type_ == GgufType::Array) return arrays_[i];
  return scalar_value(elem_type_, packed_.data() + i * scalar_size(elem_type_));
}

bool GgufValue::is_integer() const {
  switch (type()) {
    case GgufType::U8:
    case GgufType::I8:
    case GgufType::U16:
    case GgufType::I16:
    case GgufType::U32:
    case GgufType::I32:
    case GgufType::U64:
    case GgufType::I64: return true;
    default: return false;
  }
}

std::optional<int64_t> GgufValue::as_i64() const {
  return std::visit(
      [](const auto& x) -> std::optional<int64_t> {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, uint64_t>) {
          if (x > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
          return static_cast<int64_t>(x);
        } else if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
          return static_cast<int64_t>(x);
        } else {
          return std::nullopt;
        }
      },
      v_);
}

std::optional<uint64_t> GgufValue::as_u64() const {
  return std::visit(
      [](const auto& x) -> std::optional<uint64_t> {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
          if constexpr (std::is_signed_v<T>)
            if (x < 0) return std::nullopt;
          return static_cast<uint64_t>(x);
        } else {
          return std::nullopt;
        }
      },
      v_);
}

std::optional<double> GgufValue::as_f64() const {
  if (const auto* f = get_if<float>()) return *f;
  if (const auto* d = get_if<double>()) return *d;
  if (auto i = as_i64()) return static_cast<double>(*i);
  if (auto u = as_u64()) return static_cast<double>(*u);
  return std::nullopt;
}

std::string GgufValue::to_string(size_t max_items) const {
  constexpr size_t kMaxStringChars = 80;
  if (const auto* s = get_if<std::string>()) {
    if (s->size() <= kMaxStringChars) return fmt::format("\"{}\"", *s);
    return fmt::format("\"{}\"... ({} bytes)", s->substr(0, kMaxStringChars), s->size());
  }
  if (const auto* b = get_if<bool>()) return *b ? "true" : "false";
  if (const auto* f = get_if<float>()) return fmt::format("{}", *f);
  if (const auto* d = get_if<double>()) return fmt::format("{}", *d);
  if (const auto* a = get_if<GgufArray>()) {
    std::string out = "[";
    const size_t shown = std::min(a->size(), max_items);
    for (size_t i = 0; i < shown; ++i) out += (i ? ", " : "") + a->at(i).to_string(max_items);
    if (shown < a->size()) out += fmt::format(", ... ({} items)", a->size());
    return out + "]";
  }
  if (auto i = as_i64()) return fmt::format("{}", *i);
  return fmt::format("{}", as_u64().value_or(0));
}

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;  // parse() guarantees this does not overflow
  return n;
}

std::shared_ptr<GgufFile> GgufFile::open(const std::string& path) {
  std::shared_ptr<GgufFile> f(new GgufFile());
  f->path_ = path;
  f->file_ = MappedFile::open(path);
  try {
    f->parse();
  } catch (const Error& e) {
    throw Error(fmt::format("GGUF '{}': {}", path, e.what()));
  }
  return f;
}

size_t GgufFile::file_size() const {
  return file_->size();
}

void GgufFile::parse() {
  Reader r(file_->bytes());
  const auto magic = r.read_bytes(4, "magic");
  KS_CHECK(std::memcmp(magic.data(), kMagic, 4) == 0, "not a GGUF file (bad magic {:02x} {:02x} {:02x} {:02x})",
           magic[0], magic[1], magic[2], magic[3]);
  version_ = r.read<uint32_t>("version");
  KS_CHECK(version_ != 0x03000000u && version_ != 0x02000000u, "big-endian GGUF files are not supported");
  KS_CHECK(version_ == 2 || version_ == 3, "unsupported GGUF version {} (only versions 2 and 3 are supported)",
           version_);
  const auto n_tensors = r.read<uint64_t>("tensor count");
  const auto n_kv = r.read<uint64_t>("metadata count");
  r.need_items(n_kv, kMinKvBytes, "metadata");
  kv_.reserve(std::min(n_kv, kMaxUpfrontReserve));
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key;
    try {
      key = r.read_string("metadata key");
      const auto type = checked_type(r.read<uint32_t>("metadata value type"));
      auto value = GgufParser::read_value(r, type, 0);
      KS_CHECK(kv_index_.emplace(key, kv_.size()).second, "duplicate metadata key");
      kv_.emplace_back(std::move(key), std::move(value));
    } catch (const Error& e) {
      throw Error(fmt::format("metadata entry {} ('{}'): {}", i, key, e.what()));
    }
  }

  if (const auto* a = find("general.alignment")) {
    const auto v = a->as_u64();
    KS_CHECK(v && *v > 0 && *v <= kMaxAlignment && std::has_single_bit(*v),
             "general.alignment must be a power of two up to {}, got {}", kMaxAlignment, a->to_string());
    alignment_ = *v;
  } else {
    alignment_ = kDefaultAlignment;
  }

  r.need_items(n_tensors, kMinTensorInfoBytes, "tensor info");
  tensors_.reserve(std::min(n_tensors, kMaxUpfrontReserve));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    try {
      t.name = r.read_string("tensor name");
      const auto n_dims = r.read<uint32_t>("tensor dimension count");
      KS_CHECK(n_dims >= 1 && n_dims <= kMaxDims, "has {} dimensions (must be 1 to {})", n_dims, kMaxDims);
      uint64_t numel = 1;
      t.shape.resize(n_dims);
      for (uint32_t d = 0; d < n_dims; ++d) {
        const auto ne = r.read<int64_t>("tensor dimension");
        KS_CHECK(ne >= 1, "dimension {} is {} (must be positive)", d, ne);
        KS_CHECK(checked_mul(numel, static_cast<uint64_t>(ne), numel) &&
                     numel <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                 "element count overflows");
        t.shape[n_dims - 1 - d] = ne;  // ggml lists the innermost dimension first
      }
      t.ggml_type = r.read<uint32_t>("tensor type");
      t.offset = r.read<uint64_t>("tensor data offset");

      uint64_t block_size = 0, block_bytes = 0;
      if ((t.dtype = dtype_from_ggml(t.ggml_type))) {
        const auto& info = dtype_info(*t.dtype);
        t.type_name = info.name;
        block_size = static_cast<uint64_t>(info.block_size);
        block_bytes = info.block_bytes;
      } else if (auto it = std::find_if(std::begin(kOtherGgmlTypes), std::end(kOtherGgmlTypes),
                                        [&](const auto& o) { return o.id == t.ggml_type; });
                 it != std::end(kOtherGgmlTypes)) {
        t.type_name = it->name;
        block_size = it->block_size;
        block_bytes = it->block_bytes;
      } else {
        t.type_name = fmt::format("type {}", t.ggml_type);
      }
      if (block_size) {
        const auto row = static_cast<uint64_t>(t.shape.back());
        KS_CHECK(row % block_size == 0, "innermost dimension {} is not a multiple of the {} block size {}", row,
                 t.type_name, block_size);
        KS_CHECK(checked_mul(numel / block_size, block_bytes, t.nbytes), "byte size overflows");
      }
      KS_CHECK(t.offset % alignment_ == 0, "data offset {} is not a multiple of the alignment {}", t.offset,
               alignment_);
      KS_CHECK(tensor_index_.emplace(t.name, tensors_.size()).second, "duplicate tensor name");
    } catch (const Error& e) {
      throw Error(fmt::format("tensor {} ('{}'): {}", i, t.name, e.what()));
    }
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment after the tensor infos.
  data_offset_ = (r.pos() + alignment_ - 1) / alignment_ * alignment_;
  const uint64_t size = file_->size();
  const uint64_t data_bytes = data_offset_ <= size ? size - data_offset_ : 0;
  KS_CHECK(tensors_.empty() || data_offset_ <= size, "truncated: the data section would start at offset {} of {}",
           data_offset_, size);
  std::vector<const GgufTensorInfo*> by_offset;
  by_offset.reserve(tensors_.size());
  for (const auto& t : tensors_) {
    KS_CHECK(t.offset <= data_bytes && t.nbytes <= data_bytes - t.offset,
             "tensor '{}' ({} bytes at data offset {}) runs past the end of the file ({} data bytes)", t.name, t.nbytes,
             t.offset, data_bytes);
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const auto *prev = by_offset[i - 1], *cur = by_offset[i];
    KS_CHECK(prev->offset + prev->nbytes <= cur->offset, "tensors '{}' and '{}' overlap", prev->name, cur->name);
  }
}

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const GgufValue& GgufFile::require(std::string_view key) const {
  const auto* v = find(key);
  KS_CHECK(v, "GGUF '{}': missing metadata key '{}'", path_, key);
  return *v;
}

namespace {

[[noreturn]] void type_error(const std::string& path, std::string_view key, const GgufValue& v,
                             std::string_view wanted) {
  KS_FAIL("GGUF '{}': metadata key '{}' holds {} but {} was expected", path, key, type_description(v), wanted);
}

template <typename T>
constexpr std::string_view int_name() {
  if constexpr (std::is_same_v<T, uint32_t>) return "u32";
  if constexpr (std::is_same_v<T, int32_t>) return "i32";
  if constexpr (std::is_same_v<T, uint64_t>) return "u64";
}

template <typename T>
T int_value(const GgufValue& v, const std::string& path, std::string_view key) {
  if (!v.is_integer()) type_error(path, key, v, fmt::format("an integer ({})", int_name<T>()));
  std::optional<T> out;
  if constexpr (std::is_signed_v<T>) {
    auto x = v.as_i64();
    if (x && *x >= std::numeric_limits<T>::min() && *x <= std::numeric_limits<T>::max()) out = static_cast<T>(*x);
  } else {
    auto x = v.as_u64();
    if (x && *x <= std::numeric_limits<T>::max()) out = static_cast<T>(*x);
  }
  KS_CHECK(out, "GGUF '{}': metadata key '{}' = {} does not fit {}", path, key, v.to_string(), int_name<T>());
  return *out;
}

float float_value(const GgufValue& v, const std::string& path, std::string_view key) {
  if (const auto* f = v.get_if<float>()) return *f;
  if (const auto* d = v.get_if<double>()) {
    KS_CHECK(!std::isfinite(*d) || std::fabs(*d) <= std::numeric_limits<float>::max(),
             "GGUF '{}': metadata key '{}' = {} does not fit f32", path, key, *d);
    return static_cast<float>(*d);
  }
  type_error(path, key, v, "a float (f32 or f64)");
}

bool bool_value(const GgufValue& v, const std::string& path, std::string_view key) {
  if (const auto* b = v.get_if<bool>()) return *b;
  type_error(path, key, v, "bool");
}

const std::string& string_value(const GgufValue& v, const std::string& path, std::string_view key) {
  if (const auto* s = v.get_if<std::string>()) return *s;
  type_error(path, key, v, "string");
}

const GgufArray& array_value(const GgufValue& v, const std::string& path, std::string_view key,
                             std::string_view wanted) {
  if (const auto* a = v.get_if<GgufArray>()) return *a;
  type_error(path, key, v, wanted);
}

std::vector<std::string> string_array(const GgufValue& v, const std::string& path, std::string_view key) {
  const auto& a = array_value(v, path, key, "array of string");
  if (a.elem_type() != GgufType::String) type_error(path, key, v, "array of string");
  return a.strings();
}

std::vector<int32_t> i32_array(const GgufValue& v, const std::string& path, std::string_view key) {
  const auto& a = array_value(v, path, key, "array of i32");
  std::vector<int32_t> out;
  out.reserve(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const auto item = a.at(i);
    if (!item.is_integer()) type_error(path, key, v, "array of i32");
    out.push_back(int_value<int32_t>(item, path, key));
  }
  return out;
}

std::vector<float> f32_array(const GgufValue& v, const std::string& path, std::string_view key) {
  const auto& a = array_value(v, path, key, "array of f32");
  if (a.elem_type() != GgufType::F32 && a.elem_type() != GgufType::F64) type_error(path, key, v, "array of f32");
  std::vector<float> out;
  out.reserve(a.size());
  for (size_t i = 0; i < a.size(); ++i) out.push_back(float_value(a.at(i), path, key));
  return out;
}

}  // namespace

// The three forms of each getter: required, defaulted and optional, all through one conversion function.
#define KS_GGUF_GETTERS(Name, Type, Convert)                                \
  Type GgufFile::get_##Name(std::string_view key) const {                   \
    return Convert(require(key), path_, key);                               \
  }                                                                         \
  Type GgufFile::get_##Name(std::string_view key, Type def) const {         \
    const auto* v = find(key);                                              \
    return v ? Convert(*v, path_, key) : def;                               \
  }                                                                         \
  std::optional<Type> GgufFile::find_##Name(std::string_view key) const {   \
    const auto* v = find(key);                                              \
    return v ? std::optional<Type>(Convert(*v, path_, key)) : std::nullopt; \
  }

KS_GGUF_GETTERS(u32, uint32_t, int_value<uint32_t>)
KS_GGUF_GETTERS(i32, int32_t, int_value<int32_t>)
KS_GGUF_GETTERS(u64, uint64_t, int_value<uint64_t>)
KS_GGUF_GETTERS(f32, float, float_value)
KS_GGUF_GETTERS(bool, bool, bool_value)
#undef KS_GGUF_GETTERS

const std::string& GgufFile::get_string(std::string_view key) const {
  return string_value(require(key), path_, key);
}

std::string GgufFile::get_string(std::string_view key, std::string_view def) const {
  const auto* v = find(key);
  return v ? string_value(*v, path_, key) : std::string(def);
}

const std::string* GgufFile::find_string(std::string_view key) const {
  const auto* v = find(key);
  return v ? &string_value(*v, path_, key) : nullptr;
}

std::vector<std::string> GgufFile::get_string_array(std::string_view key) const {
  return string_array(require(key), path_, key);
}

std::optional<std::vector<std::string>> GgufFile::find_string_array(std::string_view key) const {
  const auto* v = find(key);
  return v ? std::optional(string_array(*v, path_, key)) : std::nullopt;
}

std::vector<int32_t> GgufFile::get_i32_array(std::string_view key) const {
  return i32_array(require(key), path_, key);
}

std::optional<std::vector<int32_t>> GgufFile::find_i32_array(std::string_view key) const {
  const auto* v = find(key);
  return v ? std::optional(i32_array(*v, path_, key)) : std::nullopt;
}

std::vector<float> GgufFile::get_f32_array(std::string_view key) const {
  return f32_array(require(key), path_, key);
}

std::optional<std::vector<float>> GgufFile::find_f32_array(std::string_view key) const {
  const auto* v = find(key);
  return v ? std::optional(f32_array(*v, path_, key)) : std::nullopt;
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

Tensor GgufFile::tensor(std::string_view name) const {
  const auto* info = find_tensor(name);
  KS_CHECK(info, "GGUF '{}': no tensor named '{}'", path_, name);
  KS_CHECK(info->dtype, "GGUF '{}': tensor '{}' has ggml type {} ({}), which Kestrel does not support", path_, name,
           info->type_name, info->ggml_type);
  Tensor t;
  t.dtype = *info->dtype;
  t.shape = info->shape;
  const auto* p = file_->data() + data_offset_ + info->offset;
  t.data = const_cast<uint8_t*>(p);
  t.storage = std::shared_ptr<void>(file_, t.data);  // aliasing: the view keeps the whole mapping alive
  return t;
}

}  // namespace kestrel
