#include "model/gguf_quantize.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <vector>

#include "core/dequant.h"
#include "core/error.h"
#include "core/half.h"
#include "core/log.h"
#include "core/quant_blocks.h"
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

// The input's tensor, unchanged.
void add_copy(GgufWriter& w, const std::shared_ptr<GgufFile>& src, const GgufTensorInfo& info) {
  w.add_tensor(info.name, *info.dtype, info.shape, [src, name = info.name](std::vector<uint8_t>& buf) {
    const Tensor t = src->tensor(name);
    const auto* p = static_cast<const uint8_t*>(t.data);
    buf.assign(p, p + t.nbytes());
  });
}

// Row r of q's codes as blocks of `type` (gguf_type_for(q.spec)).
void encode_codes_row(const quant::IntQuantized& q, int64_t r, DType type, uint8_t* out) {
  const uint8_t* codes = q.codes.data() + r * q.k;
  const int64_t groups = q.groups();
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* c = codes + g * 32;
    const float scale = q.scales[r * groups + g];
    const uint16_t d = f32_to_f16(scale);  // an f16 value already: exact
    if (type == DType::Q8_0) {
      auto* b = reinterpret_cast<quant::BlockQ8_0*>(out) + g;
      b->d = d;
      for (int j = 0; j < 32; ++j) b->qs[j] = static_cast<int8_t>(int{c[j]} - 128);
      continue;
    }
    uint8_t* qs;
    if (type == DType::Q4_0) {
      auto* b = reinterpret_cast<quant::BlockQ4_0*>(out) + g;
      b->d = d;
      qs = b->qs;
    } else {
      auto* b = reinterpret_cast<quant::BlockQ4_1*>(out) + g;
      b->d = d;
      b->m = f32_to_f16(-scale * static_cast<float>(q.zeros[r * groups + g]));
      qs = b->qs;
    }
    for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>(c[j] | c[j + 16] << 4);  // ggml: j and j + 16
  }
}

QuantTarget target_of(DType t) {
  return t == DType::Q4_0 ? QuantTarget::Q4_0 : t == DType::Q4_1 ? QuantTarget::Q4_1 : QuantTarget::Q8_0;
}

}  // namespace

std::optional<DType> gguf_type_for(const quant::IntQuantSpec& spec) {
  if (spec.group != 32) return std::nullopt;
  if (spec.bits == 4) return spec.sym ? DType::Q4_0 : DType::Q4_1;
  if (spec.bits == 8 && spec.sym) return DType::Q8_0;
  return std::nullopt;
}

QuantizeSummary write_gguf_codes(const std::string& in, const std::string& out,
                                 const std::map<std::string, quant::IntQuantized>& linears,
                                 const std::map<std::string, std::vector<float>>& replaced,
                                 const std::map<std::string, GgufValue>& metadata,
                                 const std::function<void(size_t, size_t)>& progress) {
  const auto src = GgufFile::open(in);
  GgufWriter w;
  for (const auto& [key, value] : src->metadata()) w.set(key, value);
  for (const auto& [key, value] : metadata) w.set(key, value);
  QuantizeSummary sum;
  size_t found = 0;
  for (const GgufTensorInfo& info : src->tensors()) {
    KS_CHECK(info.dtype.has_value(), "tensor '{}' has type {}, which Kestrel can't read", info.name, info.type_name);
    sum.bytes_in += info.nbytes;
    if (const auto l = linears.find(info.name); l != linears.end()) {
      const quant::IntQuantized& q = l->second;
      const std::optional<DType> type = gguf_type_for(q.spec);
      KS_CHECK(type.has_value() && q.g_idx.empty(),
               "{}: {}-bit codes in groups of {}{}{} have no GGUF type; GGUF holds 4 bits in groups of 32 (q4_0, "
               "q4_1) and 8 bits symmetric in groups of 32 (q8_0), without act order; write a GPTQ checkpoint "
               "from a Hugging Face model for the others",
               info.name, q.spec.bits, q.spec.group, q.spec.sym ? ", symmetric" : "",
               q.g_idx.empty() ? "" : ", act order");
      KS_CHECK(info.shape.size() == 2 && info.shape[0] == q.n && info.shape[1] == q.k,
               "{}: the quantized linear is [{}, {}], the input's tensor {}", info.name, q.n, q.k, info.shape.size());
      ++found;
      ++sum.quantized;
      ++sum.by_type[std::string(dtype_name(*type))];
      sum.bytes_out += static_cast<uint64_t>(q.n) * row_bytes(*type, q.k);
      w.add_tensor(info.name, *type, info.shape, [&q, type = *type](std::vector<uint8_t>& buf) {
        const size_t out_row = row_bytes(type, q.k);
        buf.resize(static_cast<size_t>(q.n) * out_row);
        ThreadPool::global().parallel_for(q.n, [&](int64_t b, int64_t e) {
          for (int64_t r = b; r < e; ++r) encode_codes_row(q, r, type, buf.data() + r * out_row);
        });
      });
      continue;
    }
    if (const auto f = replaced.find(info.name); f != replaced.end()) {
      int64_t numel = 1;
      for (int64_t d : info.shape) numel *= d;
      KS_CHECK(static_cast<int64_t>(f->second.size()) == numel, "{}: {} replacement values for {} elements", info.name,
               f->second.size(), numel);
      ++found;
      sum.bytes_out += f->second.size() * sizeof(float);
      w.add_tensor(info.name, DType::F32, info.shape, [&v = f->second](std::vector<uint8_t>& buf) {
        const auto* p = reinterpret_cast<const uint8_t*>(v.data());
        buf.assign(p, p + v.size() * sizeof(float));
      });
      continue;
    }
    ++sum.copied;
    sum.bytes_out += info.nbytes;
    add_copy(w, src, info);
  }
  KS_CHECK(found == linears.size() + replaced.size(),
           "{} of the {} quantized or replaced tensors are not in '{}' (a GGUF storing them fused or by other names)",
           linears.size() + replaced.size() - found, linears.size() + replaced.size(), in);
  const auto common = std::max_element(sum.by_type.begin(), sum.by_type.end(),
                                       [](const auto& a, const auto& b) { return a.second < b.second; });
  if (common != sum.by_type.end()) {
    const DType t = *dtype_from_name(common->first);
    w.set("general.file_type", GgufValue(GgufValue::Storage(llama_file_type(target_of(t)))));
    w.set("general.quantization_version", GgufValue(GgufValue::Storage(uint32_t{2})));
  }
  w.write(out, progress);
  return sum;
}

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
      add_copy(w, src, info);
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
