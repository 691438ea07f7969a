#include "model/architecture.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"
#include "model/arch/gemma3.h"
#include "model/arch/llama.h"
#include "model/arch/qwen2.h"
#include "model/arch/qwen3.h"

namespace kestrel {
namespace {

std::string supported(std::vector<std::string_view> Architecture::*field) {
  std::string s;
  for (const Architecture* a : architectures())
    for (auto n : a->*field) s += (s.empty() ? "" : ", ") + std::string(n);
  return s;
}

const Architecture& find(std::string_view key, std::vector<std::string_view> Architecture::*field, const char* what) {
  for (const Architecture* a : architectures()) {
    const auto& names = a->*field;
    if (std::find(names.begin(), names.end(), key) != names.end()) return *a;
  }
  KS_FAIL("unsupported architecture '{}' ({}); Kestrel supports: {}", key, what, supported(field));
}

}  // namespace

void apply_architecture(const Architecture& arch, ModelConfig& c) {
  c.arch = std::string(arch.name);
  c.qkv_bias = arch.qkv_bias;
  c.qk_norm = arch.qk_norm;
  c.post_norms = arch.post_norms;
  c.gelu = arch.gelu;
  if (arch.embed_scale) c.embed_scale = std::sqrt(static_cast<float>(c.hidden));
}

const std::vector<const Architecture*>& architectures() {
  static const std::vector<const Architecture*> all = {&arch::kLlama, &arch::kQwen2, &arch::kQwen3, &arch::kGemma3};
  return all;
}

const Architecture& architecture_for_gguf(std::string_view name) {
  return find(name, &Architecture::gguf_names, "GGUF general.architecture");
}

const Architecture& architecture_for_hf(std::string_view model_type) {
  return find(model_type, &Architecture::hf_model_types, "config.json model_type");
}

}  // namespace kestrel
