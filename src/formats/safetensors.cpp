#include "formats/safetensors.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>

#include "core/error.h"
#include "core/mapped_file.h"
#include "formats/hf_config.h"
#include "formats/output_file.h"

namespace kestrel {

static_assert(std::endian::native == std::endian::little, "the safetensors reader assumes a little-endian host");

namespace {

namespace fs = std::filesystem;

// The reference implementation refuses headers above 100 MB; so do we, before touching the JSON.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// {"name": {"shape": [...]}} is three levels; anything much deeper is not a safetensors header.
constexpr int kMaxHeaderDepth = 8;
constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";

struct DtypeEntry {
  std::string_view name;
  uint64_t elem_bytes;
  std::optional<DType> dtype;
};
constexpr DtypeEntry kDtypes[] = {
    {"F32", 4, DType::F32}, {"F16", 2, DType::F16}, {"BF16", 2, DType::BF16}, {"I32", 4, DType::I32},
    {"I8", 1, DType::I8},   {"F64", 8, {}},         {"I64", 8, {}},           {"I16", 2, {}},
    {"U64", 8, {}},         {"U32", 4, {}},         {"U16", 2, {}},           {"U8", 1, {}},
    {"BOOL", 1, {}},        {"F8_E4M3", 1, {}},     {"F8_E5M2", 1, {}},       {"F8_E8M0", 1, {}},
    {"C64", 8, {}},
};

const DtypeEntry* find_dtype(std::string_view name) {
  for (const auto& d : kDtypes)
    if (d.name == name) return &d;
  return nullptr;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

SafetensorsTensorInfo parse_entry(const std::string& name, const nlohmann::json& j, uint64_t data_bytes) {
  KS_CHECK(j.is_object(), "entry is not a JSON object");
  SafetensorsTensorInfo t;
  t.name = name;
  const auto dtype_it = j.find("dtype");
  KS_CHECK(dtype_it != j.end() && dtype_it->is_string(), "missing string field 'dtype'");
  t.dtype_name = dtype_it->get<std::string>();
  const auto* dt = find_dtype(t.dtype_name);
  if (dt) t.dtype = dt->dtype;

  const auto shape_it = j.find("shape");
  KS_CHECK(shape_it != j.end() && shape_it->is_array(), "missing array field 'shape'");
  uint64_t numel = 1;
  for (const auto& d : *shape_it) {
    KS_CHECK(d.is_number_unsigned(), "shape entry {} is not a non-negative integer", d.dump());
    const auto n = d.get<uint64_t>();
    // Checked on its own too: a zero elsewhere in the shape keeps the product small.
    KS_CHECK(n <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), "shape entry {} is too large", n);
    KS_CHECK(!__builtin_mul_overflow(numel, n, &numel) &&
                 numel <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
             "element count overflows");
    t.shape.push_back(static_cast<int64_t>(n));
  }

  const auto off_it = j.find("data_offsets");
  KS_CHECK(off_it != j.end() && off_it->is_array() && off_it->size() == 2 && (*off_it)[0].is_number_unsigned() &&
               (*off_it)[1].is_number_unsigned(),
           "'data_offsets' must be two non-negative integers");
  t.begin = (*off_it)[0].get<uint64_t>();
  t.end = (*off_it)[1].get<uint64_t>();
  KS_CHECK(t.begin <= t.end && t.end <= data_bytes, "data_offsets [{}, {}) are outside the {} data bytes", t.begin,
           t.end, data_bytes);
  if (dt) {
    uint64_t expected;
    KS_CHECK(!__builtin_mul_overflow(numel, dt->elem_bytes, &expected) && expected == t.nbytes(),
             "data_offsets span {} bytes but shape {} of {} needs {}", t.nbytes(), shape_it->dump(), t.dtype_name,
             numel * dt->elem_bytes);
  }
  return t;
}

// A shard name from an index must stay inside the model directory.
void check_shard_name(const std::string& name) {
  const fs::path p(name);
  KS_CHECK(!name.empty() && p.is_relative(), "shard name '{}' is not a relative file name", name);
  for (const auto& part : p) KS_CHECK(part != "..", "shard name '{}' leaves the model directory", name);
}

}  // namespace

int64_t SafetensorsTensorInfo::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;  // parse_entry guarantees no overflow
  return n;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->file_ = MappedFile::open(path);
  try {
    f->parse();
  } catch (const Error& e) {
    throw Error(fmt::format("safetensors '{}': {}", path, e.what()));
  }
  return f;
}

void SafetensorsFile::parse() {
  const uint64_t size = file_->size();
  KS_CHECK(size >= 8, "file of {} bytes is too small for the 8-byte header length", size);
  const uint64_t header_bytes = read_u64_le(file_->data());
  KS_CHECK(header_bytes <= size - 8, "header length {} runs past the end of the file ({} bytes)", header_bytes, size);
  KS_CHECK(header_bytes <= kMaxHeaderBytes, "header length {} exceeds the {} byte limit", header_bytes,
           kMaxHeaderBytes);
  data_offset_ = 8 + header_bytes;
  const uint64_t data_bytes = size - data_offset_;

  const std::string_view text(reinterpret_cast<const char*>(file_->data()) + 8, header_bytes);
  const auto header = parse_json(text, "header", kMaxHeaderDepth);
  KS_CHECK(header.is_object(), "header is not a JSON object");
  tensors_.reserve(header.size());
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      KS_CHECK(value.is_object(), "__metadata__ is not a JSON object");
      for (const auto& [k, v] : value.items()) {
        KS_CHECK(v.is_string(), "__metadata__ value '{}' is not a string", k);
        metadata_.emplace(k, v.get<std::string>());
      }
      continue;
    }
    try {
      tensors_.push_back(parse_entry(name, value, data_bytes));
    } catch (const Error& e) {
      throw Error(fmt::format("tensor '{}': {}", name, e.what()));
    }
  }
  // nlohmann::json objects iterate in key order, so tensors_ is sorted by name for find().

  std::vector<const SafetensorsTensorInfo*> by_offset;
  by_offset.reserve(tensors_.size());
  for (const auto& t : tensors_)
    if (t.nbytes()) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    KS_CHECK(by_offset[i - 1]->end <= by_offset[i]->begin, "tensors '{}' and '{}' overlap", by_offset[i - 1]->name,
             by_offset[i]->name);
}

const SafetensorsTensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                             [](const SafetensorsTensorInfo& t, std::string_view n) { return t.name < n; });
  return it != tensors_.end() && it->name == name ? &*it : nullptr;
}

Tensor SafetensorsFile::tensor(std::string_view name) const {
  const auto* info = find(name);
  KS_CHECK(info, "safetensors '{}': no tensor named '{}'", path_, name);
  KS_CHECK(info->dtype, "safetensors '{}': tensor '{}' has dtype {}, which Kestrel does not load", path_, name,
           info->dtype_name);
  const uint8_t* p = file_->data() + data_offset_ + info->begin;
  const size_t elem_bytes = dtype_info(*info->dtype).block_bytes;
  if (reinterpret_cast<uintptr_t>(p) % elem_bytes != 0) {
    // The format does not promise alignment; typed access to a misaligned pointer would be UB.
    Tensor t = Tensor::empty_host(*info->dtype, info->shape);
    std::memcpy(t.data, p, info->nbytes());
    return t;
  }
  Tensor t;
  t.dtype = *info->dtype;
  t.shape = info->shape;
  t.data = const_cast<uint8_t*>(p);
  t.storage = std::shared_ptr<void>(file_, t.data);  // aliasing: the view keeps the whole mapping alive
  return t;
}

std::shared_ptr<SafetensorsModel> SafetensorsModel::open_file(const std::string& path) {
  std::shared_ptr<SafetensorsModel> m(new SafetensorsModel());
  m->path_ = path;
  m->add_file(SafetensorsFile::open(path));
  return m;
}

std::shared_ptr<SafetensorsModel> SafetensorsModel::open_dir(const std::string& dir) {
  std::error_code ec;
  KS_CHECK(fs::is_directory(dir, ec), "'{}' is not a directory", dir);
  const fs::path index_path = fs::path(dir) / kIndexName;
  if (!fs::exists(index_path, ec)) {
    const fs::path single = fs::path(dir) / kSingleName;
    KS_CHECK(fs::exists(single, ec), "'{}' has neither {} nor {}", dir, kSingleName, kIndexName);
    auto m = open_file(single.string());
    m->path_ = dir;
    return m;
  }

  const auto index = load_json_file(index_path.string());
  const auto where = index_path.string();
  KS_CHECK(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(),
           "safetensors index '{}': missing object 'weight_map'", where);
  const auto& weight_map = index["weight_map"];
  std::set<std::string> shard_names;
  for (const auto& [name, shard] : weight_map.items()) {
    KS_CHECK(shard.is_string(), "safetensors index '{}': weight_map['{}'] is not a string", where, name);
    try {
      check_shard_name(shard.get<std::string>());
    } catch (const Error& e) {
      throw Error(fmt::format("safetensors index '{}': {}", where, e.what()));
    }
    shard_names.insert(shard.get<std::string>());
  }
  KS_CHECK(!shard_names.empty(), "safetensors index '{}': weight_map is empty", where);

  std::shared_ptr<SafetensorsModel> m(new SafetensorsModel());
  m->path_ = dir;
  std::map<std::string, const SafetensorsFile*> shard_files;
  for (const auto& shard : shard_names) {
    const auto shard_path = (fs::path(dir) / shard).string();
    KS_CHECK(fs::exists(shard_path, ec), "safetensors index '{}' lists shard '{}', which does not exist", where, shard);
    m->add_file(SafetensorsFile::open(shard_path));
    shard_files[shard] = m->files_.back().get();
  }
  for (const auto& [name, shard] : weight_map.items()) {
    const auto it = m->index_.find(name);
    KS_CHECK(it != m->index_.end(), "safetensors index '{}' maps '{}' to '{}', but no shard has that tensor", where,
             name, shard.get<std::string>());
    KS_CHECK(it->second.file == shard_files[shard.get<std::string>()],
             "safetensors index '{}' maps '{}' to '{}', but it is in '{}'", where, name, shard.get<std::string>(),
             it->second.file->path());
  }
  return m;
}

void SafetensorsModel::add_file(std::shared_ptr<SafetensorsFile> file) {
  for (const auto& t : file->tensors()) {
    const auto [it, inserted] = index_.emplace(t.name, Entry{file.get(), &t});
    KS_CHECK(inserted, "tensor '{}' is in both '{}' and '{}'", t.name, it->second.file->path(), file->path());
  }
  files_.push_back(std::move(file));
}

const SafetensorsTensorInfo* SafetensorsModel::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second.info;
}

std::vector<std::string> SafetensorsModel::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& [name, e] : index_) out.push_back(name);
  return out;
}

Tensor SafetensorsModel::tensor(std::string_view name) const {
  auto it = index_.find(name);
  KS_CHECK(it != index_.end(), "safetensors model '{}': no tensor named '{}'", path_, name);
  return it->second.file->tensor(name);
}

const char* safetensors_dtype_name(DType dtype) {
  for (const auto& d : kDtypes)
    if (d.dtype == dtype) return d.name.data();
  KS_FAIL("safetensors has no dtype for {}", dtype_name(dtype));
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors) {
  nlohmann::json header = {{"__metadata__", {{"format", "pt"}}}};
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    KS_CHECK(t.device == Device::Cpu, "write_safetensors: tensor '{}' is not on the host", name);
    KS_CHECK(!header.contains(name), "write_safetensors: tensor '{}' is listed twice", name);
    header[name] = {{"dtype", safetensors_dtype_name(t.dtype)},
                    {"shape", t.shape},
                    {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data section starts 8-byte aligned
  write_file_atomically(path, [&](OutputFile& o) {
    o.scalar<uint64_t>(text.size());
    o.bytes(text.data(), text.size());
    for (const auto& [name, t] : tensors) o.bytes(t.data, t.nbytes());
  });
}

}  // namespace kestrel
