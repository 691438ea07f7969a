// Argument packs and registries of the MoE ops (moe_ops.h), dispatched as ops.h's are.
#pragma once

#include "ops/dispatch.h"
#include "ops/moe_ops.h"

namespace kestrel::ops {

struct MoeRouterArgs {
  const Tensor& logits;
  const MoeRouting& routing;
  Tensor& ids;
  Tensor& weights;
};
struct MoeFfnArgs {
  const Tensor& x;
  const MoeExperts& experts;
  const Tensor& ids;
  const Tensor& weights;
  Tensor& y;
};

struct MoeRegistries {
  Registry<MoeRouterArgs> moe_router{"moe_router"};
  Registry<MoeFfnArgs> moe_ffn{"moe_ffn"};
};

// Empty until backends::install() registers the built-in backends' variants.
MoeRegistries& moe_registries();

}  // namespace kestrel::ops
