#include "model/model_config.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"
#include "core/log.h"

namespace kestrel {

void ModelConfig::validate() const {
  auto positive = [](int v, const char* what) {
    KS_CHECK(v > 0, "model config: {} must be positive, got {}", what, v);
  };
  positive(n_layers, "number of layers");
  positive(hidden, "hidden size");
  positive(ffn, "feed-forward size");
  positive(n_heads, "number of attention heads");
  positive(n_kv_heads, "number of key/value heads");
  positive(head_dim, "head dimension");
  positive(vocab, "vocabulary size");
  KS_CHECK(n_layers <= 4096 && hidden <= (1 << 20) && ffn <= (1 << 22) && n_heads <= 4096 && head_dim <= 1024,
           "model config: implausible sizes (layers {}, hidden {}, ffn {}, heads {}, head_dim {})", n_layers, hidden,
           ffn, n_heads, head_dim);
  KS_CHECK(n_heads % n_kv_heads == 0, "model config: {} attention heads are not a multiple of {} key/value heads",
           n_heads, n_kv_heads);
  KS_CHECK(rope.rot_dim > 0 && rope.rot_dim <= head_dim && rope.rot_dim % 2 == 0,
           "model config: RoPE dimension {} must be even and at most the head dimension {}", rope.rot_dim, head_dim);
  positive(max_ctx, "context length");
  // RoPE numbers straight from the file (GGUF f32 values, rope_freqs.weight): a NaN, infinite or non-positive
  // one makes every rotation angle NaN or meaningless.
  auto positive_finite = [](float v, const char* what) {
    KS_CHECK(std::isfinite(v) && v > 0, "model config: {} must be a positive finite number, got {}", what, v);
  };
  positive_finite(rope.theta, "RoPE base");
  positive_finite(rope.linear_factor, "linear RoPE scaling factor");
  for (float f : rope.freq_factors) positive_finite(f, "RoPE frequency factor (rope_freqs.weight)");
  KS_CHECK(rms_eps > 0 && rms_eps < 1, "model config: RMSNorm epsilon {} is out of range", rms_eps);
  KS_CHECK(std::isfinite(embed_scale) && embed_scale > 0, "model config: embedding scale {} is out of range",
           embed_scale);
  KS_CHECK(std::isfinite(attn_scale) && attn_scale >= 0, "model config: attention scale {} is out of range",
           attn_scale);
  KS_CHECK(sliding_window >= 0, "model config: sliding window {} is negative", sliding_window);
  KS_CHECK(sliding_layers.empty() || sliding_layers.size() == static_cast<size_t>(n_layers),
           "model config: {} sliding-window layer flags for {} layers", sliding_layers.size(), n_layers);
  if (has_sliding_layers()) {
    KS_CHECK(rope_local.rot_dim == rope.rot_dim, "model config: local and global RoPE dimensions differ");
    positive_finite(rope_local.theta, "local RoPE base");
    positive_finite(rope_local.linear_factor, "local linear RoPE scaling factor");
  }
}

bool ModelConfig::has_sliding_layers() const {
  for (int l = 0; l < n_layers; ++l)
    if (is_sliding(l)) return true;
  return false;
}

void ModelConfig::set_sliding(int window, std::vector<uint8_t> sliding, float local_theta) {
  sliding_window = window;
  sliding_layers = std::move(sliding);
  rope_local = ops::RopeParams{};
  rope_local.style = rope.style;
  rope_local.rot_dim = rope.rot_dim;
  rope_local.theta = local_theta;
}

std::vector<uint8_t> ModelConfig::sliding_period(int n_layers, int period) {
  std::vector<uint8_t> s(static_cast<size_t>(n_layers));
  for (int l = 0; l < n_layers; ++l) s[l] = (l + 1) % period != 0;
  return s;
}

float ModelConfig::attention_scale() const {
  return attn_scale > 0 ? attn_scale : 1.f / std::sqrt(static_cast<float>(head_dim));
}

int ModelConfig::context_size(int requested) const {
  if (requested <= 0) return std::min(max_ctx > 0 ? max_ctx : 4096, 8192);
  if (max_ctx > 0 && requested > max_ctx)
    log::warn_once("context/" + std::to_string(requested),
                   fmt::format("a {}-token context is past the {} tokens {} was trained on: its output there is "
                               "untested and may degrade",
                               requested, max_ctx, name.empty() ? arch : name));
  return requested;
}

}  // namespace kestrel
