#include "formats/gguf_writer.h"

#include <type_traits>
#include <variant>

#include "core/error.h"
#include "formats/output_file.h"

namespace kestrel {
namespace {

constexpr uint64_t kDefaultAlignment = 32;

// A value's payload, after its type id: a string's length and bytes; an array's element type, count and
// items (nested arrays the same way); a scalar's bytes (bool as one byte).
void payload(OutputFile& o, const GgufValue& v) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          o.string(x);
        } else if constexpr (std::is_same_v<T, GgufArray>) {
          o.scalar<uint32_t>(static_cast<uint32_t>(x.elem_type()));
          o.scalar<uint64_t>(x.size());
          for (size_t i = 0; i < x.size(); ++i) payload(o, x.at(i));
        } else if constexpr (std::is_same_v<T, bool>) {
          o.scalar<uint8_t>(x ? 1 : 0);
        } else {
          o.scalar<T>(x);
        }
      },
      v.storage());
}

}  // namespace

void GgufWriter::set(const std::string& key, GgufValue v) {
  for (auto& [k, old] : kv_)
    if (k == key) return void(old = std::move(v));
  kv_.emplace_back(key, std::move(v));
}

void GgufWriter::add_tensor(std::string name, DType dtype, std::vector<int64_t> shape, Producer produce) {
  KS_CHECK(!shape.empty() && shape.size() <= 4, "tensor '{}': GGUF tensors have 1 to 4 dimensions", name);
  KS_CHECK(shape.back() % dtype_info(dtype).block_size == 0, "tensor '{}': rows of {} are not whole {} blocks", name,
           shape.back(), dtype_name(dtype));
  tensors_.push_back({std::move(name), dtype, std::move(shape), std::move(produce)});
}

void GgufWriter::write(const std::string& path, const std::function<void(size_t, size_t)>& progress) const {
  uint64_t alignment = kDefaultAlignment;
  for (const auto& [k, v] : kv_)
    if (k == "general.alignment")
      if (const auto a = v.as_u64()) alignment = *a;
  KS_CHECK(alignment > 0 && (alignment & (alignment - 1)) == 0, "general.alignment {} is not a power of two",
           alignment);
  write_file_atomically(path, [&](OutputFile& o) {
    o.bytes("GGUF", 4);
    o.scalar<uint32_t>(3);
    o.scalar<uint64_t>(tensors_.size());
    o.scalar<uint64_t>(kv_.size());
    for (const auto& [k, v] : kv_) {
      o.string(k);
      o.scalar<uint32_t>(static_cast<uint32_t>(v.type()));
      payload(o, v);
    }
    std::vector<uint64_t> sizes;
    uint64_t offset = 0;
    for (const Pending& t : tensors_) {
      o.string(t.name);
      o.scalar<uint32_t>(static_cast<uint32_t>(t.shape.size()));
      for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) o.scalar<uint64_t>(static_cast<uint64_t>(*it));
      o.scalar<uint32_t>(dtype_to_ggml(t.dtype));
      o.scalar<uint64_t>(offset);
      int64_t rows = 1;
      for (size_t i = 0; i + 1 < t.shape.size(); ++i) rows *= t.shape[i];
      sizes.push_back(static_cast<uint64_t>(rows) * row_bytes(t.dtype, t.shape.back()));
      offset = (offset + sizes.back() + alignment - 1) / alignment * alignment;
    }
    o.pad_to(alignment);
    std::vector<uint8_t> buf;
    for (size_t i = 0; i < tensors_.size(); ++i) {
      buf.clear();
      tensors_[i].produce(buf);
      KS_CHECK(buf.size() == sizes[i], "tensor '{}': produced {} bytes, its shape and type need {}", tensors_[i].name,
               buf.size(), sizes[i]);
      o.bytes(buf.data(), buf.size());
      o.pad_to(alignment);
      if (progress) progress(i + 1, tensors_.size());
    }
  });
}

}  // namespace kestrel
