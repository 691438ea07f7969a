#include "model/gguf_quantize.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <vector>

#include "core/dequant.h"
#include "core/error.h"
#include "core/log.h"
#include "core/thread_pool.h"
#include "formats/gguf.h"
#include "formats/gguf_writer.h"

namespace kestrel {
namespace {

// llama.cpp's llama_ftype values for each kind of file.
uint32_t llama_file_type(QuantTarget t) {
  switch (t) {
    case QuantTarget::Q4_0: return 2;
    case QuantTarget::Q4_1: return 3;
    case QuantTarget::Q8_0: return 7;
    case QuantTarget::Q5_0: return 8;
    case QuantTarget::Q5_1: return 9;
    case QuantTarget::Q2_K: return 10;
    case QuantTarget::Q3_K: return 11;
    case QuantTarget::Q4_K_M: return 15;
    case QuantTarget::Q5_K_M: return 17;
    case QuantTarget::Q6_K: return 18;
  }
  return 0;
}

// The layer of a "blk.N...." tensor, or -1.
int layer_of(const std::string& name) {
  return name.starts_with("blk.") ? std::atoi(name.c_str() + 4) : -1;
}

// The type of one 2-D tensor. The *_K_M mixes follow llama.cpp's recipe: the output projection in Q6_K, and
// attn_v / ffn_down in Q6_K for the first and last eighth of the layers and every third layer between,
// the rest in the base type.
DType tensor_type(QuantTarget target, const std::string& name, int n_layers) {
  DType base = DType::Q8_0;
  switch (target) {
    case QuantTarget::Q4_0: return DType::Q4_0;
    case QuantTarget::Q4_1: return DType::Q4_1;
    case QuantTarget::Q8_0: return DType::Q8_0;
    case QuantTarget::Q5_0: return DType::Q5_0;
    case QuantTarget::Q5_1: return DType::Q5_1;
    case QuantTarget::Q6_K: return DType::Q6_K;
    case QuantTarget::Q2_K: return name == "output.weight" ? DType::Q6_K : DType::Q2_K;
    case QuantTarget::Q3_K: return name == "output.weight" ? DType::Q6_K : DType::Q3_K;
    case QuantTarget::Q4_K_M: base = DType::Q4_K; break;
    case QuantTarget::Q5_K_M: base = DType::Q5_K; break;
  }
  if (name == "output.weight") return DType::Q6_K;
  if (name.ends_with("attn_v.weight") || name.ends_with("ffn_down.weight")) {
    const int l = layer_of(name), eighth = n_layers / 8;
    if (l >= 0 && (l < eighth || l >= 7 * n_layers / 8 || (l - eighth) % 3 == 2)) return DType::Q6_K;
  }
  return base;
}

}  // namespace

std::optional<QuantTarget> quant_target(std::string_view name) {
  static const std::pair<std::string_view, QuantTarget> kNames[] = {
      {"q8_0", QuantTarget::Q8_0},     {"q4_0", QuantTarget::Q4_0}, {"q4_1", QuantTarget::Q4_1},
      {"q5_0", QuantTarget::Q5_0},     {"q5_1", QuantTarget::Q5_1}, {"q4_k_m", QuantTarget::Q4_K_M},
      {"q5_k_m", QuantTarget::Q5_K_M}, {"q6_k", QuantTarget::Q6_K}, {"q2_k", QuantTarget::Q2_K},
      {"q3_k", QuantTarget::Q3_K}};
  std::string lower(name);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const auto& [n, t] : kNames)
    if (n == lower) return t;
  return std::nullopt;
}

QuantTarget rtn_target(int bits, int group, bool symmetric) {
  if (group == 32) {
    if (bits == 8 && symmetric) return QuantTarget::Q8_0;
    if (bits == 4) return symmetric ? QuantTarget::Q4_0 : QuantTarget::Q4_1;
    if (bits == 5) return symmetric ? QuantTarget::Q5_0 : QuantTarget::Q5_1;
  }
  KS_FAIL(
      "--bits {} --group {}{}: no GGUF type Kestrel writes holds that; round-to-nearest writes --bits 8 --group 32 "
      "--sym (q8_0), --bits 4 or 5 --group 32 with --sym (q4_0, q5_0) or without (q4_1, q5_1); the K-quant "
      "files by name (q2_k, q3_k, q4_k_m, q5_k_m, q6_k)",
      bits, group, symmetric ? " --sym" : "");
}

QuantizeSummary quantize_gguf(const std::string& in, const std::string& out, QuantTarget target,
                              const std::function<void(size_t, size_t)>& progress) {
  const auto src = GgufFile::open(in);
  GgufWriter w;
  for (const auto& [key, value] : src->metadata()) w.set(key, value);
  w.set("general.file_type", GgufValue(GgufValue::Storage(llama_file_type(target))));
  w.set("general.quantization_version", GgufValue(GgufValue::Storage(uint32_t{2})));
  int n_layers = 0;
  for (const GgufTensorInfo& info : src->tensors()) n_layers = std::max(n_layers, layer_of(info.name) + 1);

  QuantizeSummary sum;
  bool requantized = false;
  for (const GgufTensorInfo& info : src->tensors()) {
    KS_CHECK(info.dtype.has_value(), "tensor '{}' has type {}, which Kestrel can't read", info.name, info.type_name);
    sum.bytes_in += info.nbytes;
    // Rows that are no whole number of the type's blocks (a K-quant's 256) take Q8_0, as llama.cpp falls back.
    DType type = tensor_type(target, info.name, n_layers);
    if (info.shape.size() == 2 && info.shape.back() % dtype_info(type).block_size != 0) type = DType::Q8_0;
    const bool quantize =
        info.shape.size() == 2 && info.shape.back() % dtype_info(type).block_size == 0 && *info.dtype != type;
    if (!quantize) {
      ++sum.copied;
      sum.bytes_out += info.nbytes;
      w.add_tensor(info.name, *info.dtype, info.shape, [src, name = info.name](std::vector<uint8_t>& buf) {
        const Tensor t = src->tensor(name);
        const auto* p = static_cast<const uint8_t*>(t.data);
        buf.assign(p, p + t.nbytes());
      });
      continue;
    }
    requantized = requantized || dtype_info(*info.dtype).quantized;
    ++sum.quantized;
    ++sum.by_type[std::string(dtype_name(type))];
    const int64_t rows = info.shape[0], cols = info.shape[1];
    sum.bytes_out += static_cast<uint64_t>(rows) * row_bytes(type, cols);
    w.add_tensor(info.name, type, info.shape, [src, name = info.name, type, rows, cols](std::vector<uint8_t>& buf) {
      const Tensor t = src->tensor(name);
      const size_t out_row = row_bytes(type, cols);
      buf.resize(static_cast<size_t>(rows) * out_row);
      ThreadPool::global().parallel_for(
          rows,
          [&](int64_t begin, int64_t end) {
            std::vector<float> f(static_cast<size_t>(cols));
            for (int64_t r = begin; r < end; ++r) {
              dequantize_row(t.dtype, t.row(r), f.data(), cols);
              quantize_row(type, f.data(), buf.data() + static_cast<size_t>(r) * out_row, cols);
            }
          },
          16);
    });
  }
  if (requantized) log::warn("{} holds quantized weights: quantizing them again adds its rounding to theirs", in);
  w.write(out, progress);
  return sum;
}

}  // namespace kestrel
