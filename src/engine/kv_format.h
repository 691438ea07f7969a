// What the KV cache stores per token: the page element type of keys and of values, and for the quantized
// formats the group size of their scales. fp8, int8 and int4 store codes (F8E4M3, U8, U4) with an f16
// scale (and min) per group of `group` elements of one token's head row in a parameter pool beside the
// pages (core/kv_codec.h); llama.cpp's cache types (q8_0, ...) keep ggml's blocks with their scales inline.
// The cache is sized by all of it. SKVQ's formats add a code limit (ternary values), a clip ratio, channel
// orders calibrated per layer (kv_calibration.h), and sink and window tokens kept in full precision (open
// blocks, kv_cache.h). KIVI's formats quantize keys per channel over groups of tokens instead (a scale and
// min per channel of a head and token group, computed when the group's block is sealed) beside per-token
// values, with a window of recent tokens in full precision and no sinks. Chosen per run and per server with
// --kv-type; a cache holds one format, so its prefix cache never mixes formats. docs/kv_cache.md has the
// formats, their bytes and accuracy.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/dtype.h"

namespace kestrel {

struct KvCalibration;

struct KvFormat {
  std::string name = "f32";  // as --kv-type spells it
  DType k = DType::F32;
  DType v = DType::F32;
  int group = 0;                     // elements per scale group of the code types; 0: the pages carry no parameter pool
  int k_qmax = 0, v_qmax = 0;        // the largest code (0: the type's; 2: ternary in U2 slots)
  float k_clip = 1.f, v_clip = 1.f;  // range clip ratios where no calibration gives them per layer
  int sinks = 0;                     // leading tokens kept in full precision (rounded up to whole blocks)
  int window = 0;                    // most recent tokens kept in full precision (at least; whole blocks)
  // > 0 (KIVI): keys get a scale and min per channel over groups of this many consecutive tokens, not per
  // `group` elements of a token's row (values keep `group`); the cache's blocks are whole token groups.
  int k_token_group = 0;
  // Channel orders and clip ratios per layer (SKVQ, `kestrel quantize --kv skvq`); null: in order.
  std::shared_ptr<const KvCalibration> calibration;

  static KvFormat plain(DType t);
  bool quantized() const;
  // f16 parameters per group of K (V): 1 (fp8) or 2 (integer codes); 0 without a pool.
  int k_params() const;
  int v_params() const;
  // Bytes of one token's keys and values in one layer, scales included (outside the window and sinks).
  size_t bytes_per_token_layer(int n_kv_heads, int head_dim) const;
  // Whether some tokens stay in full precision (open blocks).
  bool windowed() const { return sinks > 0 || window > 0; }
  // Whether the format takes a channel-order calibration (SKVQ).
  bool reorders() const { return name.starts_with("skvq"); }
};

// The format --kv-type NAME selects: f32, f16, bf16, fp8 (e4m3, a scale per 64), int8 (a scale and min per
// 64), int4 (per 32), int2 (per 32, for comparisons), skvq-k2v1.5 (alias skvq: 2-bit keys, ternary values,
// per 64, clip 0.96, 5 sinks, a 128-token window), skvq-k2v2, skvq-k4v4 (per 32), kivi2 (2-bit keys per
// channel over 32 tokens, 2-bit values per 32 channels, a 128-token window), kivi4 (the same at 4 bits), or
// one of llama.cpp's cache types q8_0, q4_0, q4_1, q5_0, q5_1. nullopt for an unknown name.
std::optional<KvFormat> kv_format_from_name(std::string_view name);
// The names above, comma-separated, for help texts and errors.
std::string kv_format_names();

// Whether the CUDA kernels read and write this format (bf16, fp8, int8, int4; not yet the windowed ones).
bool kv_format_on_cuda(const KvFormat& f);

// The block size a cache of this format uses when `requested` tokens are asked for: a per-channel key
// format seals whole token groups, so its blocks are `requested` rounded up to a multiple of the group
// (kivi2's 32 for the default 16); any other format takes `requested`.
int kv_block_size(const KvFormat& f, int requested);

// Throws a kestrel::Error that says what to do when a model's head size does not split into the format's
// blocks or groups.
void check_kv_format(const KvFormat& f, int head_dim);

}  // namespace kestrel
