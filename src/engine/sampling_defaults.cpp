#include "engine/sampling_defaults.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/error.h"

namespace kestrel {
namespace {

// A number from generation_config.json, or `fallback` when the key is absent or null; a wrong type or
// range is the file's error, named.
double config_number(const nlohmann::json& g, const char* key, double lo, double hi, double fallback) {
  auto it = g.find(key);
  if (it == g.end() || it->is_null()) return fallback;
  KS_CHECK(it->is_number(), "generation_config.json: '{}' must be a number", key);
  const double v = it->get<double>();
  KS_CHECK(v >= lo && v <= hi, "generation_config.json: '{}' must be in [{}, {}], got {}", key, lo, hi, v);
  return v;
}

}  // namespace

SamplingDefaults sampling_defaults(const Model& model) {
  const nlohmann::json& g = model.generation_config;
  bool any = false;
  if (g.is_object())
    for (const char* key : {"temperature", "top_p", "top_k", "min_p", "repetition_penalty"})
      any |= g.contains(key) && !g[key].is_null();
  SamplingDefaults d;
  if (!any) {
    d.params = {.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f};
    d.source = "llama.cpp's defaults (the model sets none)";
    return d;
  }
  SamplingParams& p = d.params;
  p.temperature = static_cast<float>(config_number(g, "temperature", 0, 100, 1.0));
  p.top_p = static_cast<float>(config_number(g, "top_p", 1e-6, 1, 1.0));
  // transformers spells "off" 0, vLLM -1.
  p.top_k = static_cast<int>(std::max(0.0, config_number(g, "top_k", -1, 1 << 30, 0)));
  p.min_p = static_cast<float>(config_number(g, "min_p", 0, 1, 0));
  p.repetition_penalty = static_cast<float>(config_number(g, "repetition_penalty", 0.01, 100, 1.0));
  d.source = "the model's generation_config.json";
  return d;
}

std::string describe_sampling(const SamplingParams& p) {
  if (p.temperature <= 0) return "greedy";
  std::string s = fmt::format("temperature {}", p.temperature);
  if (p.top_k > 0) s += fmt::format(", top_k {}", p.top_k);
  if (p.top_p < 1) s += fmt::format(", top_p {}", p.top_p);
  if (p.min_p > 0) s += fmt::format(", min_p {}", p.min_p);
  if (p.repetition_penalty != 1) s += fmt::format(", repetition_penalty {}", p.repetition_penalty);
  return s;
}

}  // namespace kestrel
