// `kestrel quantize` for GGUF files: every 2-D tensor is rounded to its target type (round to nearest:
// ggml's rules for the 32-element types, ours for the K-quants, core/dequant.h; rows that are no whole
// number of the type's blocks take Q8_0), everything else is copied as it is, and the metadata is kept,
// with general.file_type and general.quantization_version set as llama.cpp sets them. GPTQ's and AWQ's codes
// (engine/weight_quantize.h) are written into the GGUF types that hold them as they are (write_gguf_codes).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/int_quant.h"
#include "formats/gguf.h"

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

// The GGUF type that holds grouped integer codes of `spec` (contiguous groups: no act order) without
// changing them: 4 bits in groups of 32 as Q4_0 (symmetric: z = 8, d = the scale) or Q4_1 (d = the scale,
// m = the f16 nearest -scale * zero, off by at most 2^-11 of it), 8 bits symmetric in groups of 32 as Q8_0
// (code - 128, d = the scale); nullopt for anything else (2 and 3 bits, other groups, asymmetric 8 bits).
std::optional<DType> gguf_type_for(const quant::IntQuantSpec& spec);

// Writes `out` from the float GGUF at `in`: each tensor named in `linears` ("blk.0.attn_q.weight") stored as
// gguf_type_for its codes (throws naming the tensor when none fits, or when its shape is not the input's),
// each one named in `replaced` (AWQ's norms and biases with its scales folded in, values as applied) as F32,
// everything else copied; the metadata kept, general.file_type set to the most common type's, and `metadata`
// added (the method and its calibration).
QuantizeSummary write_gguf_codes(const std::string& in, const std::string& out,
                                 const std::map<std::string, quant::IntQuantized>& linears,
                                 const std::map<std::string, std::vector<float>>& replaced,
                                 const std::map<std::string, GgufValue>& metadata,
                                 const std::function<void(size_t, size_t)>& progress = {});

}  // namespace kestrel
