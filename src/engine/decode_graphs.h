// Decode steps on the GPU replayed from CUDA graphs, one per batch-size bucket (1, 2, 4, ..., 128).
// A step's inputs (tokens, positions, KV slots, block tables, sequence lengths) are copied into static
// device buffers that every replay reads; a batch is padded up to its bucket with rows that write a
// reserved KV block; attention is planned for `max_kv_len` keys, and the kernels read each sequence's
// real length from the device, so one graph serves every length up to it. Graphs are captured up front
// (after an eager warm-up that sizes every workspace) and re-captured if the model's scratch or the
// attention workspace moves.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/tensor.h"
#include "engine/batch_plan.h"
#include "engine/kv_cache.h"
#include "engine/sampler.h"
#include "model/decoder.h"
#include "ops/context.h"

namespace kestrel {

class DecodeGraphs {
 public:
  // The model must already be placed on ctx.device (CUDA); the cache must have a free block (taken as the
  // padding rows' block until destruction). max_batch is rounded up to a bucket (at most 128).
  DecodeGraphs(Decoder& model, KvCache& cache, const ops::Context& ctx, int max_batch, int max_kv_len);
  ~DecodeGraphs();
  DecodeGraphs(const DecodeGraphs&) = delete;
  DecodeGraphs& operator=(const DecodeGraphs&) = delete;

  // Whether this build and context can run decode graphs (a CUDA build, a CUDA context).
  static bool supported(const ops::Context& ctx);
  static int bucket_for(int n);  // smallest bucket >= n

  // One decode step: one new token per sequence (each sequence's blocks must cover length + 1 and
  // length + 1 <= max_kv_len). Returns device f32 logits [work.size(), vocab], a view of a static buffer
  // that the next step overwrites. The sequences' lengths are not advanced (the caller does, as with
  // Decoder::forward).
  Tensor step(std::span<const SeqWork> work);

  int max_batch() const { return max_batch_; }
  int max_kv_len() const { return max_kv_len_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int max_batch_ = 0;
  int max_kv_len_ = 0;
};

// Picks one token per row of device logits [B, vocab] on the GPU (greedy, temperature, top-k/p, min-p;
// no penalties) and returns the ids. `step` varies the random draw from step to step for the same seed.
std::vector<int32_t> sample_on_device(const ops::Context& ctx, const Tensor& logits, const SamplingParams& p,
                                      uint64_t step);

}  // namespace kestrel
