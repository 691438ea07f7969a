// Format-neutral summaries of model files, for `kestrel info`: every tensor with its type, shape and
// size, and totals per type.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kestrel {

class GgufFile;
class SafetensorsModel;

struct TensorSummary {
  std::string name;
  std::string type;  // "q4_k", "bf16", "F8_E4M3" ... as the file names it
  std::vector<int64_t> shape;
  uint64_t nbytes = 0;  // 0 when the type's size is unknown
};

struct TypeTotal {
  std::string type;
  size_t tensors = 0;
  uint64_t elements = 0;
  uint64_t bytes = 0;
};

struct ModelSummary {
  std::string description;             // "GGUF v3, alignment 32" ...
  std::vector<TensorSummary> tensors;  // file order (GGUF) or name order (safetensors)
  std::vector<TypeTotal> per_type;     // largest total first
  uint64_t total_elements = 0;
  uint64_t total_bytes = 0;
};

ModelSummary summarize(const GgufFile& file);
ModelSummary summarize(const SafetensorsModel& model);

// A printable report: header line, per-type table and, when `list_tensors`, one line per tensor.
std::string format_summary(const ModelSummary& summary, bool list_tensors);
// "key: type = value" lines for every GGUF metadata entry; arrays show at most `max_items` items.
std::string format_gguf_metadata(const GgufFile& file, size_t max_items = 8);

// "1.5 KiB", "85.9 MiB" ...
std::string format_bytes(uint64_t bytes);

}  // namespace kestrel
