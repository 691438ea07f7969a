#include "model/gptq_checkpoint.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "core/error.h"
#include "core/half.h"
#include "formats/hf_config.h"
#include "formats/safetensors.h"
#include "model/weight_source.h"

namespace kestrel {
namespace {

namespace fs = std::filesystem;

// Puts code i of a bit stream of b-bit codes into little-endian 32-bit words `stride` words apart (the
// inverse of hf_quant.cpp's stream_code: GPTQ packs qweight's columns along K, qzeros' rows along N).
void put_code(uint32_t* words, int64_t stride, int bits, int64_t i, uint32_t code) {
  const int64_t bit = i * bits;
  const int shift = static_cast<int>(bit & 31);
  words[(bit >> 5) * stride] |= code << shift;
  if (shift + bits > 32) words[((bit >> 5) + 1) * stride] |= code >> (32 - shift);
}

// Files of a model directory that are its weights or its configuration (written anew), not copied.
bool written_anew(const fs::path& p) {
  const std::string name = p.filename().string();
  static const std::set<std::string> kNames = {"config.json", "quantize_config.json", "model.safetensors.index.json"};
  static const std::set<std::string> kExtensions = {".safetensors", ".bin", ".pt", ".pth", ".gguf", ".tmp"};
  return kNames.contains(name) || kExtensions.contains(p.extension().string());
}

Tensor f32_tensor(const std::vector<float>& v, std::vector<int64_t> shape) {
  Tensor t = Tensor::empty_host(DType::F32, std::move(shape));
  KS_CHECK(t.numel() == static_cast<int64_t>(v.size()), "a replaced tensor has {} values for {} elements", v.size(),
           t.numel());
  std::copy(v.begin(), v.end(), t.ptr<float>());
  return t;
}

}  // namespace

void check_gptq_shape(int64_t k, int bits, const std::string& name) {
  KS_CHECK(k * bits % 32 == 0,
           "{}: {} inputs of {}-bit codes are not whole 32-bit words; a GPTQ checkpoint packs each column along "
           "its inputs",
           name, k, bits);
}

GptqTensors pack_gptq(const quant::IntQuantized& q, const std::string& name) {
  const int b = q.spec.bits;
  const int64_t N = q.n, K = q.k, G = q.groups();
  check_gptq_shape(K, b, name);
  GptqTensors t;
  t.qweight = Tensor::empty_host(DType::I32, {K * b / 32, N});
  t.qzeros = Tensor::empty_host(DType::I32, {G, (N * b + 31) / 32});
  t.scales = Tensor::empty_host(DType::F16, {G, N});
  t.g_idx = Tensor::empty_host(DType::I32, {K});
  std::fill_n(t.qweight.ptr<int32_t>(), t.qweight.numel(), 0);
  std::fill_n(t.qzeros.ptr<int32_t>(), t.qzeros.numel(), 0);
  auto* qw = reinterpret_cast<uint32_t*>(t.qweight.ptr<int32_t>());
  auto* qz = reinterpret_cast<uint32_t*>(t.qzeros.ptr<int32_t>());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) put_code(qw + n, N, b, k, q.codes[n * K + k]);
  for (int64_t g = 0; g < G; ++g)
    for (int64_t n = 0; n < N; ++n) {
      put_code(qz + g * t.qzeros.cols(), 1, b, n, q.zeros[n * G + g]);
      t.scales.ptr<uint16_t>()[g * N + n] = f32_to_f16(q.scales[n * G + g]);
    }
  for (int64_t k = 0; k < K; ++k) t.g_idx.ptr<int32_t>()[k] = static_cast<int32_t>(q.group_of(k));
  return t;
}

void write_gptq_checkpoint(const GptqCheckpoint& c, const Architecture& arch, const std::string& in_dir,
                           const std::string& out_dir) {
  const fs::path in(in_dir), out(out_dir);
  std::error_code ec;
  KS_CHECK(!fs::exists(out) || !fs::equivalent(in, out, ec), "the output directory must not be the input model");
  fs::create_directories(out, ec);
  KS_CHECK(!ec && fs::is_directory(out), "cannot create the directory '{}': {}", out_dir, ec.message());
  const auto st = SafetensorsModel::open_dir(in_dir);

  // Transformers' names of what changes: quantized linears by their prefix, replaced tensors by name.
  std::map<std::string, const quant::IntQuantized*> quantized;
  for (const auto& [name, q] : c.linears) {
    const std::string hf = hf_tensor_name(name, arch.post_norms);
    KS_CHECK(hf.ends_with(".weight") && st->has(hf), "'{}' ({}) is not a linear weight of '{}'", name, hf, in_dir);
    quantized[hf.substr(0, hf.size() - 7)] = &q;
  }
  std::map<std::string, std::vector<float>> replaced;
  for (const auto& [name, values] : c.replaced) {
    const std::string hf = hf_tensor_name(name, arch.post_norms);
    KS_CHECK(st->has(hf), "'{}' ({}) is not a tensor of '{}'", name, hf, in_dir);
    std::vector<float> v = values;
    if (arch.hf_norm_plus_one && name.ends_with("norm.weight"))
      for (float& x : v) x -= 1.f;  // back to the stored w of (1 + w)
    replaced[hf] = std::move(v);
  }

  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const std::string& name : st->names()) {
    const std::string prefix = name.ends_with(".weight") ? name.substr(0, name.size() - 7) : std::string();
    if (auto it = quantized.find(prefix); it != quantized.end()) {
      GptqTensors t = pack_gptq(*it->second, prefix);
      tensors.emplace_back(prefix + ".qweight", std::move(t.qweight));
      tensors.emplace_back(prefix + ".qzeros", std::move(t.qzeros));
      tensors.emplace_back(prefix + ".scales", std::move(t.scales));
      tensors.emplace_back(prefix + ".g_idx", std::move(t.g_idx));
    } else if (auto r = replaced.find(name); r != replaced.end()) {
      tensors.emplace_back(name, f32_tensor(r->second, st->find(name)->shape));
    } else {
      tensors.emplace_back(name, st->tensor(name));
    }
  }
  write_safetensors((out / "model.safetensors").string(), tensors);
  fs::remove(out / "model.safetensors.index.json", ec);  // a stale index would shadow the new file

  nlohmann::json config = load_json_file((in / "config.json").string());
  config["quantization_config"] = c.quantization_config;
  std::ofstream cf(out / "config.json", std::ios::trunc);
  cf << config.dump(2) << "\n";
  KS_CHECK(cf.good(), "writing '{}' failed", (out / "config.json").string());
  for (const fs::directory_entry& e : fs::directory_iterator(in)) {
    if (!e.is_regular_file() || written_anew(e.path())) continue;
    fs::copy_file(e.path(), out / e.path().filename(), fs::copy_options::overwrite_existing, ec);
    KS_CHECK(!ec, "cannot copy '{}' to '{}': {}", e.path().string(), out_dir, ec.message());
  }
}

}  // namespace kestrel
