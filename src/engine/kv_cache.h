// The paged KV cache: per layer, K and V pools of fixed-size blocks ([num_blocks, block_size,
// n_kv_heads, head_dim] of the format's page types, quantized blocks carrying their scales); one
// BlockAllocator owns every block (reference-counted so the prefix cache can share full blocks); each
// sequence owns a block table. See docs/ARCHITECTURE.md ("KV cache") and docs/kv_cache.md (formats).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "engine/kv_format.h"
#include "ops/ops.h"

namespace kestrel {

class BlockAllocator {
 public:
  explicit BlockAllocator(int32_t num_blocks);
  // A free block with reference count 1, or nullopt when none is left.
  std::optional<int32_t> allocate();
  void retain(int32_t block);
  void release(int32_t block);  // returns the block to the free list when its count reaches 0
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }
  int32_t num_total() const { return static_cast<int32_t>(refs_.size()); }
  int32_t ref_count(int32_t block) const;

 private:
  std::vector<int32_t> free_;
  std::vector<int32_t> refs_;
};

struct KvCacheConfig {
  int n_layers = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int block_size = 16;
  int32_t num_blocks = 0;
  KvFormat format;
};

// The default size of a cache serving up to `max_running` sequences of `n_ctx` positions: 1024 tokens per
// running sequence within 1 GiB (counted in the format's bytes, scales included, so a quantized cache holds
// more tokens), but always one whole context (the server's and the Python package's).
int64_t default_kv_tokens(const KvCacheConfig& cfg, int n_ctx, int max_running);

class KvCache {
 public:
  KvCache(const KvCacheConfig& cfg, const ops::Context& ctx);
  const KvCacheConfig& config() const { return cfg_; }
  ops::KvLayer& layer(int l) { return layers_.at(l); }
  std::span<ops::KvLayer> layers() { return layers_; }
  BlockAllocator& blocks() { return blocks_; }
  const BlockAllocator& blocks() const { return blocks_; }
  int block_size() const { return cfg_.block_size; }
  size_t bytes_per_token() const;  // all layers, K and V, scales included

 private:
  KvCacheConfig cfg_;
  std::vector<ops::KvLayer> layers_;
  BlockAllocator blocks_;
};

// One sequence's view of the cache: its block table and how many positions hold valid K/V.
class SequenceKv {
 public:
  const std::vector<int32_t>& block_table() const { return blocks_; }
  int32_t length() const { return length_; }
  int32_t capacity(const KvCache& cache) const { return static_cast<int32_t>(blocks_.size()) * cache.block_size(); }
  // Makes room for `new_length` positions; false (and no change) when the cache has too few free blocks.
  bool reserve(KvCache& cache, int32_t new_length);
  // Starts an empty sequence on blocks that already hold the K/V of its first positions (prefix-cache
  // hits the caller has retained); the sequence now owns those references.
  void adopt_prefix(const KvCache& cache, std::vector<int32_t> blocks);
  // Marks positions [0, new_length) as written (after a forward step).
  void set_length(int32_t new_length) { length_ = new_length; }
  // Forgets positions >= new_length and frees the blocks no longer needed.
  void truncate(KvCache& cache, int32_t new_length);
  void release(KvCache& cache) { truncate(cache, 0); }
  // Cache slot of position p (block * block_size + offset).
  int32_t slot(const KvCache& cache, int32_t p) const;

 private:
  std::vector<int32_t> blocks_;
  int32_t length_ = 0;
};

}  // namespace kestrel
