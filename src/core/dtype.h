// Element types of tensors. Quantized GGUF types are block formats: `block_size` elements are stored in
// `block_bytes` bytes; layouts follow ggml exactly so GGUF data is used in place.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace kestrel {

enum class DType : uint8_t {
  F32,
  F16,
  BF16,
  I32,
  I8,
  Q4_0,
  Q4_1,
  Q8_0,
  Q8_1,  // activation format paired with Q4_0/Q4_1 weights (ggml layout)
  Q4_K,
  Q6_K,
  Q8_K,  // activation format paired with K-quant weights (ggml layout)
  Q5_0,
  Q5_1,
  Q2_K,
  Q3_K,
  Q5_K,
  F8E4M3,  // OCP fp8 e4m3 ("fn": finite, +-448): quantized KV pages' codes (core/kv_codec.h)
  U8,      // unsigned 8-bit codes (quantized KV pages)
  U4,      // unsigned 4-bit codes, two per byte, element 2j in the low nibble of byte j
  U2,      // unsigned 2-bit codes, four per byte, element 4j + i in bits 2i..2i+1 of byte j
  U3,      // unsigned 3-bit codes, eight per three bytes: element i in bits 3i..3i+2 of the row's bit stream
  Count,
};

struct DTypeInfo {
  std::string_view name;
  int64_t block_size;  // elements per block (1 for plain types)
  size_t block_bytes;  // bytes per block
  bool quantized;
};

const DTypeInfo& dtype_info(DType t);
inline std::string_view dtype_name(DType t) {
  return dtype_info(t).name;
}
std::optional<DType> dtype_from_name(std::string_view name);  // case-insensitive: "q4_k", "bf16" ...

// Bytes needed for one row of n elements; n must be a multiple of the block size.
size_t row_bytes(DType t, int64_t n);

// ggml's numeric type ids as stored in GGUF files, and back.
std::optional<DType> dtype_from_ggml(uint32_t ggml_type);
uint32_t dtype_to_ggml(DType t);

}  // namespace kestrel
