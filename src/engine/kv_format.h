// What the KV cache stores per token: the page element type of keys and of values, and for the quantized
// formats the group size of their scales. fp8, int8 and int4 store codes (F8E4M3, U8, U4) with an f16
// scale (and min) per group of `group` elements of one token's head row in a parameter pool beside the
// pages (core/kv_codec.h); llama.cpp's cache types (q8_0, ...) keep ggml's blocks with their scales inline.
// The cache is sized by all of it. Chosen per run and per server with --kv-type; a cache holds one format,
// so its prefix cache never mixes formats. docs/kv_cache.md has the formats, their bytes and accuracy.
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
  int group = 0;  // elements per scale group of the code types; 0: the pages carry no parameter pool

  static KvFormat plain(DType t);
  bool quantized() const;
  // f16 parameters per group of K (V): 1 (fp8) or 2 (integer codes); 0 without a pool.
  int k_params() const;
  int v_params() const;
  // Bytes of one token's keys and values in one layer, scales included.
  size_t bytes_per_token_layer(int n_kv_heads, int head_dim) const;
};

// The format --kv-type NAME selects: f32, f16, bf16, fp8 (e4m3, a scale per 64), int8 (a scale and min per
// 64), int4 (per 32), or one of llama.cpp's cache types q8_0, q4_0, q4_1, q5_0, q5_1. nullopt for an
// unknown name.
std::optional<KvFormat> kv_format_from_name(std::string_view name);
// The names above, comma-separated, for help texts and errors.
std::string kv_format_names();

// Whether the CUDA kernels read and write this format (bf16, fp8, int8, int4).
bool kv_format_on_cuda(const KvFormat& f);

// Throws a kestrel::Error that says what to do when a model's head size does not split into the format's
// blocks or groups.
void check_kv_format(const KvFormat& f, int head_dim);

}  // namespace kestrel
