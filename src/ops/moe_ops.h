// The ops of a Mixture-of-Experts FFN (issue 17): a router that picks each token's experts, and the
// experts' SwiGLU FFNs summed by the router's weights. Dispatched as ops.h's ops are (moe_dispatch.h); a
// device with no variant of them fails the call with the dispatcher's "no variant" error.
#pragma once

#include <vector>

#include "core/linear.h"
#include "core/tensor.h"
#include "ops/context.h"

namespace kestrel::ops {

// How the router turns logits into weights. Every family here takes softmax over all experts and keeps the
// top k; they differ in whether the k weights are renormalised to sum to 1 (Mixtral always; Qwen2/3-MoE
// and OLMoE when the config's norm_topk_prob says so).
struct MoeRouting {
  int k = 2;              // experts per token (n_experts_used)
  bool normalize = true;  // divide the top-k probabilities by their sum
};

// logits: f32 [T, E]; ids: i32 [T, k] (each row's experts by decreasing weight, ties to the lower expert
// id, so every variant and run picks the same); weights: f32 [T, k].
void moe_router(const Context& ctx, const Tensor& logits, const MoeRouting& r, Tensor& ids, Tensor& weights);

// One layer's experts, each a SwiGLU FFN: gate, up: F outputs of D inputs; down: D outputs of F inputs.
struct MoeExperts {
  std::vector<Linear> gate, up, down;
  int64_t count() const { return static_cast<int64_t>(gate.size()); }
};

// y[t] = sum_j weights[t, j] * down_e(silu(gate_e(x[t])) * up_e(x[t])), e = ids[t, j]. x, y: [T, D], y must
// not alias x; ids, weights as moe_router writes them.
void moe_ffn(const Context& ctx, const Tensor& x, const MoeExperts& experts, const Tensor& ids, const Tensor& weights,
             Tensor& y);

}  // namespace kestrel::ops
