// `kestrel quantize` for GGUF files: every 2-D tensor is rounded to its target type (round to nearest:
// ggml's rules for the 32-element types, ours for the K-quants, core/dequant.h; rows that are no whole
// number of the type's blocks take Q8_0), everything else is copied as it is, and the metadata is kept,
// with general.file_type and general.quantization_version set as llama.cpp sets them.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace kestrel {

// What a file becomes: one type for every quantizable tensor (q8_0, q4_0, q4_1, q5_0, q5_1, q6_k), the
// 2- and 3-bit K-quants with the output projection in Q6_K (q2_k, q3_k; not llama.cpp's Q2_K/Q3_K_* mixes,
// which also raise other tensors), or llama.cpp's mixes of K-quants (q4_k_m, q5_k_m: the base type, with
// Q6_K where llama.cpp puts it).
enum class QuantTarget { Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K_M, Q5_K_M, Q6_K };
std::optional<QuantTarget> quant_target(std::string_view name);  // "q4_k_m" ...; case-insensitive

struct QuantizeSummary {
  int quantized = 0, copied = 0;  // tensors
  uint64_t bytes_in = 0, bytes_out = 0;
  std::map<std::string, int> by_type;  // quantized tensors per type
};

// The target for round-to-nearest with `bits` per weight in groups of `group`, symmetric or with a minimum
// (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1); throws kestrel::Error naming the combinations there are.
QuantTarget rtn_target(int bits, int group, bool symmetric);

// Quantizes the GGUF at `in` and writes `out` (replaced only once complete). progress(done, total) hears
// after each tensor.
QuantizeSummary quantize_gguf(const std::string& in, const std::string& out, QuantTarget target,
                              const std::function<void(size_t, size_t)>& progress = {});

}  // namespace kestrel
