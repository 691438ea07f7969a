// One forward step as the model reads it: the step's tokens, their positions and KV-cache slots (block *
// block_size + offset), the rows that need logits, the residual stream's input where it is given instead
// of a token's embedding, all on the context's device, and the attention planned once for the step
// (ops::plan_attention, through Decoder::plan_attention). The engine's executor builds it
// (engine/executor.h); the model runs it.
#pragma once

#include "core/tensor.h"
#include "ops/ops.h"

namespace kestrel {

// A step's attention planned once for every layer of a kind: full causal, and, for models with
// sliding-window layers (Gemma 3), windowed (empty otherwise). Keep it alive as long as anything recorded
// over it (a CUDA graph) may run.
struct StepAttention {
  ops::AttentionPlan full;
  ops::AttentionPlan sliding;
};

struct StepInputs {
  Tensor tokens, positions, slots;  // i32 [T]
  Tensor logit_rows;                // i32 [R]: rows of [0, T) whose logits are computed, in this order
  Tensor seals;                     // i32 [S, 2] or empty: KV blocks every layer seals (ops::kv_seal)
  // Prompt embeddings (StepSeq::embeddings): [E, hidden] in the activation dtype, written over the embedded
  // rows `embedding_rows` (i32 [E], distinct rows of [0, T)); empty: none.
  Tensor embeddings, embedding_rows;
  const StepAttention* attention = nullptr;
};

}  // namespace kestrel
