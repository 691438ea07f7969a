#include "engine/batch_plan.h"

#include "core/error.h"

namespace kestrel {

StepBatch plan_step(const KvCache& cache, std::span<const SeqWork> work, float attention_scale) {
  StepBatch b;
  b.attention.scale = attention_scale;
  for (const SeqWork& w : work) {
    const int32_t start = w.kv->length(), n = static_cast<int32_t>(w.tokens.size());
    KS_CHECK(n > 0, "a sequence in the step has no new tokens");
    KS_CHECK(start + n <= w.kv->capacity(cache), "sequence needs {} KV positions but has blocks for {}", start + n,
             w.kv->capacity(cache));
    const int32_t row0 = b.size();
    b.attention.seqs.push_back({row0, n, start + n, w.kv->block_table().data()});
    for (int32_t i = 0; i < n; ++i) {
      b.tokens.push_back(w.tokens[i]);
      b.positions.push_back(start + i);
      b.slots.push_back(w.kv->slot(cache, start + i));
    }
    if (w.logits == LogitRows::All)
      for (int32_t i = 0; i < n; ++i) b.logit_rows.push_back(row0 + i);
    else if (w.logits == LogitRows::Last)
      b.logit_rows.push_back(row0 + n - 1);
  }
  return b;
}

}  // namespace kestrel
