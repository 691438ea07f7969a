// Prefix caching of full KV blocks by content. A full block's K/V depend on its own tokens and on every
// token before it, so its key is a chain hash (parent block's hash, this block's tokens). The cache
// holds one reference on each block it knows; a sequence that starts with the same tokens retains the
// cached blocks instead of recomputing them (a shared system prompt is computed once). Blocks only the
// cache still holds are evicted when the allocator runs dry: least recently used first, the end of a
// chain before its beginning. See docs/server.md ("Prefix cache").
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "engine/kv_cache.h"

namespace kestrel {

class PrefixCache {
 public:
  PrefixCache(BlockAllocator& blocks, int block_size) : blocks_(&blocks), block_size_(block_size) {}
  ~PrefixCache() { clear(); }
  PrefixCache(const PrefixCache&) = delete;
  PrefixCache& operator=(const PrefixCache&) = delete;

  static constexpr uint64_t kRootHash = 0x6b657374726c0001ull;
  // The key of a full block whose predecessor has key `parent` (kRootHash for the first block).
  static uint64_t hash_block(uint64_t parent, std::span<const int32_t> tokens);

  // Cached blocks for the leading full blocks of `tokens`, as many in a row as are cached (at most
  // max_blocks). Each returned block has been retained for the caller.
  std::vector<int32_t> match(std::span<const int32_t> tokens, int32_t max_blocks);
  // Offers a block whose K/V are complete: `tokens` are its block_size tokens, depth its index in the
  // sequence. The cache retains it, unless it already holds a block with this content.
  void insert(uint64_t parent, uint64_t hash, int32_t depth, std::span<const int32_t> tokens, int32_t block);
  // Marks these keys as used now (a sequence that held them finished), so they are evicted last.
  void touch(std::span<const uint64_t> hashes);
  // Frees up to n blocks that only the cache holds; returns how many it freed.
  int32_t evict(int32_t n);
  // Drops every entry (blocks still used by sequences stay theirs).
  void clear();

  int32_t size() const { return static_cast<int32_t>(entries_.size()); }
  // Code blocks held by the cache alone (free for the taking by evict()); a windowed format's open sink
  // blocks are not counted (they come from the open pool, not the budget the metrics show).
  int32_t evictable() const;

 private:
  struct Entry {
    uint64_t parent;
    int32_t block;
    int32_t depth;
    uint64_t last_used;
    std::vector<int32_t> tokens;  // checked on lookup, so a hash collision can't serve wrong K/V
  };

  BlockAllocator* blocks_;
  int block_size_;
  uint64_t clock_ = 0;
  std::unordered_map<uint64_t, Entry> entries_;
};

}  // namespace kestrel
