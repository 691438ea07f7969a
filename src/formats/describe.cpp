#include "formats/describe.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>

#include "formats/gguf.h"
#include "formats/safetensors.h"

namespace kestrel {
namespace {

uint64_t elements_of(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (auto d : shape) n *= static_cast<uint64_t>(d);  // the parsers guarantee no overflow
  return n;
}

void finish_totals(ModelSummary& s) {
  std::map<std::string, TypeTotal> by_type;
  for (const auto& t : s.tensors) {
    auto& total = by_type[t.type];
    total.type = t.type;
    total.tensors += 1;
    total.elements += elements_of(t.shape);
    total.bytes += t.nbytes;
    s.total_elements += elements_of(t.shape);
    s.total_bytes += t.nbytes;
  }
  for (auto& [type, total] : by_type) s.per_type.push_back(std::move(total));
  std::stable_sort(s.per_type.begin(), s.per_type.end(),
                   [](const TypeTotal& a, const TypeTotal& b) { return a.bytes > b.bytes; });
}

}  // namespace

std::string format_bytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(kUnits)) v /= 1024, ++u;
  return u == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.1f} {}", v, kUnits[u]);
}

ModelSummary summarize(const GgufFile& file) {
  ModelSummary s;
  s.description =
      fmt::format("GGUF v{}, {} metadata keys, alignment {}", file.version(), file.metadata().size(), file.alignment());
  for (const auto& t : file.tensors()) s.tensors.push_back({t.name, t.type_name, t.shape, t.nbytes});
  finish_totals(s);
  return s;
}

ModelSummary summarize(const SafetensorsModel& model) {
  ModelSummary s;
  s.description = fmt::format("safetensors, {} file{}", model.files().size(), model.files().size() == 1 ? "" : "s");
  for (const auto& name : model.names()) {
    const auto* t = model.find(name);
    s.tensors.push_back({t->name, t->dtype_name, t->shape, t->nbytes()});
  }
  finish_totals(s);
  return s;
}

std::string format_summary(const ModelSummary& s, bool list_tensors) {
  std::string out = fmt::format("{}: {} tensors, {} elements, {}\n", s.description, s.tensors.size(), s.total_elements,
                                format_bytes(s.total_bytes));
  out += fmt::format("  {:<10} {:>8} {:>14} {:>12}\n", "type", "tensors", "elements", "bytes");
  for (const auto& t : s.per_type)
    out += fmt::format("  {:<10} {:>8} {:>14} {:>12}\n", t.type, t.tensors, t.elements, format_bytes(t.bytes));
  if (list_tensors)
    for (const auto& t : s.tensors)
      out += fmt::format("  {:<48} {:<8} {:<20} {:>12}\n", t.name, t.type,
                         fmt::format("[{}]", fmt::join(t.shape, ", ")), format_bytes(t.nbytes));
  return out;
}

std::string format_gguf_metadata(const GgufFile& file, size_t max_items) {
  std::string out;
  for (const auto& [key, value] : file.metadata()) {
    std::string type(gguf_type_name(value.type()));
    if (const auto* a = value.get_if<GgufArray>())
      type = fmt::format("{}[{}]", gguf_type_name(a->elem_type()), a->size());
    out += fmt::format("  {}: {} = {}\n", key, type, value.to_string(max_items));
  }
  return out;
}

}  // namespace kestrel
