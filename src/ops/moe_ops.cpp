#include "core/error.h"
#include "ops/moe_dispatch.h"

namespace kestrel::ops {

MoeRegistries& moe_registries() {
  static MoeRegistries r;
  return r;
}

void moe_router(const Context& ctx, const Tensor& logits, const MoeRouting& r, Tensor& ids, Tensor& weights) {
  KS_CHECK(logits.ndim() == 2, "moe_router: logits must be [tokens, experts], got {}", logits.describe());
  const int64_t T = logits.dim(0), E = logits.dim(1);
  KS_CHECK(r.k >= 1 && r.k <= E, "moe_router: {} experts per token asked of {} experts; check n_experts_used", r.k, E);
  KS_CHECK(ids.dtype == DType::I32 && ids.ndim() == 2 && ids.dim(0) == T && ids.dim(1) == r.k,
           "moe_router: ids must be i32 [{}, {}], got {}", T, r.k, ids.describe());
  KS_CHECK(weights.ndim() == 2 && weights.dim(0) == T && weights.dim(1) == r.k,
           "moe_router: weights must be [{}, {}], got {}", T, r.k, weights.describe());
  moe_registries().moe_router.run({logits, r, ids, weights}, ctx);
}

void moe_ffn(const Context& ctx, const Tensor& x, const MoeExperts& experts, const Tensor& ids, const Tensor& weights,
             Tensor& y) {
  const int64_t E = experts.count();
  KS_CHECK(E > 0 && experts.up.size() == experts.gate.size() && experts.down.size() == experts.gate.size(),
           "moe_ffn: every expert needs gate, up and down weights ({} / {} / {} given)", experts.gate.size(),
           experts.up.size(), experts.down.size());
  KS_CHECK(x.ndim() == 2 && y.ndim() == 2 && y.dim(0) == x.dim(0) && y.dim(1) == x.dim(1),
           "moe_ffn: x and y must be [tokens, hidden] of one shape, got {} and {}", x.describe(), y.describe());
  KS_CHECK(x.data != y.data, "moe_ffn: y must not alias x");
  const int64_t D = x.dim(1);
  const int64_t F = experts.gate[0].out_features();
  for (int64_t e = 0; e < E; ++e)
    KS_CHECK(experts.gate[e].in_features() == D && experts.up[e].in_features() == D &&
                 experts.gate[e].out_features() == F && experts.up[e].out_features() == F &&
                 experts.down[e].in_features() == F && experts.down[e].out_features() == D,
             "moe_ffn: expert {}'s weights do not match hidden {} and expert width {}", e, D, F);
  KS_CHECK(ids.dtype == DType::I32 && ids.ndim() == 2 && ids.dim(0) == x.dim(0) && weights.ndim() == 2 &&
               weights.dim(0) == ids.dim(0) && weights.dim(1) == ids.dim(1),
           "moe_ffn: ids (i32) and weights must be [tokens, k] alike, got {} and {}", ids.describe(),
           weights.describe());
  moe_registries().moe_ffn.run({x, experts, ids, weights, y}, ctx);
}

}  // namespace kestrel::ops
