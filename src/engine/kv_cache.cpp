#include "engine/kv_cache.h"

#include <algorithm>

#include "core/error.h"

namespace kestrel {

BlockAllocator::BlockAllocator(int32_t num_blocks) : refs_(num_blocks, 0) {
  KS_CHECK(num_blocks > 0, "the KV cache needs at least one block");
  free_.reserve(num_blocks);
  // Hand out low block ids first (pop from the back).
  for (int32_t b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

std::optional<int32_t> BlockAllocator::allocate() {
  if (free_.empty()) return std::nullopt;
  int32_t b = free_.back();
  free_.pop_back();
  refs_[b] = 1;
  return b;
}

void BlockAllocator::retain(int32_t block) {
  KS_CHECK(block >= 0 && block < num_total() && refs_[block] > 0, "retain of unowned KV block {}", block);
  ++refs_[block];
}

void BlockAllocator::release(int32_t block) {
  KS_CHECK(block >= 0 && block < num_total() && refs_[block] > 0, "release of unowned KV block {}", block);
  if (--refs_[block] == 0) free_.push_back(block);
}

int32_t BlockAllocator::ref_count(int32_t block) const {
  KS_CHECK(block >= 0 && block < num_total(), "KV block {} out of range", block);
  return refs_[block];
}

KvCache::KvCache(const KvCacheConfig& cfg, const ops::Context& ctx) : cfg_(cfg), blocks_(cfg.num_blocks) {
  KS_CHECK(cfg.n_layers > 0 && cfg.n_kv_heads > 0 && cfg.head_dim > 0 && cfg.block_size > 0,
           "invalid KV cache configuration");
  check_kv_format(cfg.format, cfg.head_dim);
  layers_.reserve(cfg.n_layers);
  const std::vector<int64_t> shape = {cfg.num_blocks, cfg.block_size, cfg.n_kv_heads, cfg.head_dim};
  const KvFormat& f = cfg.format;
  const int64_t groups = f.group > 0 ? cfg.head_dim / f.group : 0;
  for (int l = 0; l < cfg.n_layers; ++l) {
    ops::KvLayer layer{ops::allocate(ctx, f.k, shape), ops::allocate(ctx, f.v, shape), {}, {}};
    if (groups > 0) {
      layer.k_params =
          ops::allocate(ctx, DType::F16, {cfg.num_blocks, cfg.block_size, cfg.n_kv_heads, groups, f.k_params()});
      layer.v_params =
          ops::allocate(ctx, DType::F16, {cfg.num_blocks, cfg.block_size, cfg.n_kv_heads, groups, f.v_params()});
    }
    layers_.push_back(std::move(layer));
  }
}

int64_t default_kv_tokens(const KvCacheConfig& cfg, int n_ctx, int max_running) {
  constexpr int64_t kTokensPerSequence = 1024, kBytes = int64_t{1} << 30;
  const int64_t per_token =
      int64_t{cfg.n_layers} * static_cast<int64_t>(cfg.format.bytes_per_token_layer(cfg.n_kv_heads, cfg.head_dim));
  return std::max<int64_t>(
      n_ctx, std::min<int64_t>(int64_t{max_running} * kTokensPerSequence, kBytes / std::max<int64_t>(1, per_token)));
}

size_t KvCache::bytes_per_token() const {
  return static_cast<size_t>(cfg_.n_layers) * cfg_.format.bytes_per_token_layer(cfg_.n_kv_heads, cfg_.head_dim);
}

bool SequenceKv::reserve(KvCache& cache, int32_t new_length) {
  const int32_t bs = cache.block_size();
  const size_t need = static_cast<size_t>((new_length + bs - 1) / bs);
  if (need <= blocks_.size()) return true;
  if (static_cast<size_t>(cache.blocks().num_free()) < need - blocks_.size()) return false;
  while (blocks_.size() < need) blocks_.push_back(*cache.blocks().allocate());
  return true;
}

void SequenceKv::adopt_prefix(const KvCache& cache, std::vector<int32_t> blocks) {
  KS_CHECK(blocks_.empty() && length_ == 0, "adopt_prefix needs an empty sequence");
  blocks_ = std::move(blocks);
  length_ = static_cast<int32_t>(blocks_.size()) * cache.block_size();
}

void SequenceKv::truncate(KvCache& cache, int32_t new_length) {
  KS_CHECK(new_length >= 0, "negative KV length");
  const int32_t bs = cache.block_size();
  const size_t keep = static_cast<size_t>((new_length + bs - 1) / bs);
  while (blocks_.size() > keep) {
    cache.blocks().release(blocks_.back());
    blocks_.pop_back();
  }
  if (length_ > new_length) length_ = new_length;
}

int32_t SequenceKv::slot(const KvCache& cache, int32_t p) const {
  const int32_t bs = cache.block_size();
  KS_CHECK(p >= 0 && static_cast<size_t>(p / bs) < blocks_.size(), "position {} has no KV block", p);
  return blocks_[p / bs] * bs + p % bs;
}

}  // namespace kestrel
