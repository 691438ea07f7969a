// Turns "these sequences get these new tokens" into a StepBatch: positions, cache slots, the attention
// slices and which rows need logits. Planning happens on the host; kernels only consume the plan.
#pragma once

#include <span>

#include "engine/kv_cache.h"
#include "model/step_batch.h"

namespace kestrel {

enum class LogitRows : uint8_t { None, Last, All };

struct SeqWork {
  SequenceKv* kv;                    // its blocks must already cover kv->length() + tokens.size()
  std::span<const int32_t> tokens;   // new tokens, placed after the kv->length() cached ones
  LogitRows logits = LogitRows::Last;
};

StepBatch plan_step(const KvCache& cache, std::span<const SeqWork> work, float attention_scale);

}  // namespace kestrel
