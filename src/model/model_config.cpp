#include "model/model_config.h"

#include "core/error.h"

namespace kestrel {

void ModelConfig::validate() const {
  auto positive = [](int v, const char* what) { KS_CHECK(v > 0, "model config: {} must be positive, got {}", what, v); };
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
  KS_CHECK(rope.theta > 0, "model config: RoPE base must be positive, got {}", rope.theta);
  KS_CHECK(rms_eps > 0 && rms_eps < 1, "model config: RMSNorm epsilon {} is out of range", rms_eps);
}

}  // namespace kestrel
