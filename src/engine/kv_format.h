// What the KV cache stores per token: the page element type of keys and of values (a plain float type or a
// quantized block type whose scales sit inside each block, so a page's bytes include its scales and the
// cache is sized by them). Chosen per run and per server with --kv-type; a cache holds one format, so its
// prefix cache never mixes formats. See docs/kv_cache.md for the formats, their layouts and accuracy.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "core/dtype.h"

namespace kestrel {

struct KvFormat {
  std::string name = "f32";  // as --kv-type spells it
  DType k = DType::F32;
  DType v = DType::F32;

  static KvFormat plain(DType t);
  bool quantized() const;
  // Bytes of one token's keys and values in one layer, scales included.
  size_t bytes_per_token_layer(int n_kv_heads, int head_dim) const;
};

// The format --kv-type NAME selects: f32, f16, bf16, fp8, int8, int4, or one of llama.cpp's cache types
// q8_0, q4_0, q4_1, q5_0, q5_1 (int4 is q4_1). nullopt for an unknown name.
std::optional<KvFormat> kv_format_from_name(std::string_view name);
// The names above, comma-separated, for help texts and errors.
std::string kv_format_names();

// Whether the CUDA kernels read and write this format (bf16, fp8, int8, int4).
bool kv_format_on_cuda(const KvFormat& f);

// Throws a kestrel::Error that says what to do when a model's head size does not split into the
// format's blocks.
void check_kv_format(const KvFormat& f, int head_dim);

}  // namespace kestrel
