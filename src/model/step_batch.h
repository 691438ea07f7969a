// One forward step, planned on the host: the new tokens of every sequence in the batch, where their
// K/V go in the paged cache, and which rows need logits. The engine builds it (engine/batch_plan.h);
// the model runs it.
#pragma once

#include <cstdint>
#include <vector>

#include "ops/ops.h"

namespace kestrel {

struct StepBatch {
  std::vector<int32_t> tokens;     // [T]
  std::vector<int32_t> positions;  // [T]
  std::vector<int32_t> slots;      // [T] cache slot of each token's K/V
  ops::AttentionBatch attention;   // per-sequence slices of the T tokens
  std::vector<int32_t> logit_rows;  // rows of [0, T) whose logits are returned, in this order

  int32_t size() const { return static_cast<int32_t>(tokens.size()); }
};

}  // namespace kestrel
