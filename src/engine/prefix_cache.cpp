#include "engine/prefix_cache.h"

#include <algorithm>
#include <tuple>

#include "core/error.h"

namespace kestrel {
namespace {

// splitmix64's finalizer: every input bit affects every output bit.
uint64_t mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t PrefixCache::hash_block(uint64_t parent, std::span<const int32_t> tokens) {
  uint64_t h = mix(parent ^ 0x9e3779b97f4a7c15ull);
  for (int32_t t : tokens) h = mix(h ^ (static_cast<uint64_t>(static_cast<uint32_t>(t)) + 0x9e3779b97f4a7c15ull));
  return h;
}

std::vector<int32_t> PrefixCache::match(std::span<const int32_t> tokens, int32_t max_blocks) {
  std::vector<int32_t> out;
  const int32_t full = std::min<int32_t>(max_blocks, static_cast<int32_t>(tokens.size()) / block_size_);
  uint64_t parent = kRootHash;
  const uint64_t now = ++clock_;
  for (int32_t i = 0; i < full; ++i) {
    const auto block_tokens = tokens.subspan(static_cast<size_t>(i) * block_size_, block_size_);
    const uint64_t h = hash_block(parent, block_tokens);
    auto it = entries_.find(h);
    if (it == entries_.end() || it->second.parent != parent ||
        !std::equal(block_tokens.begin(), block_tokens.end(), it->second.tokens.begin(), it->second.tokens.end()))
      break;
    blocks_->retain(it->second.block);
    it->second.last_used = now;
    out.push_back(it->second.block);
    parent = h;
  }
  return out;
}

void PrefixCache::insert(uint64_t parent, uint64_t hash, int32_t depth, std::span<const int32_t> tokens,
                         int32_t block) {
  KS_CHECK(static_cast<int>(tokens.size()) == block_size_, "prefix cache: a block holds {} tokens, got {}", block_size_,
           tokens.size());
  auto [it, added] = entries_.try_emplace(hash);
  if (!added) return;  // same content already cached (maybe in another block): keep the first
  blocks_->retain(block);
  it->second = Entry{parent, block, depth, ++clock_, std::vector<int32_t>(tokens.begin(), tokens.end())};
}

void PrefixCache::touch(std::span<const uint64_t> hashes) {
  const uint64_t now = ++clock_;
  for (uint64_t h : hashes) {
    auto it = entries_.find(h);
    if (it != entries_.end()) it->second.last_used = now;
  }
}

int32_t PrefixCache::evict(int32_t n) {
  if (n <= 0) return 0;
  // Oldest first; among equally old, deepest first (a chain's end is useless without its start).
  std::vector<std::tuple<uint64_t, int32_t, uint64_t>> candidates;
  for (const auto& [h, e] : entries_)
    if (blocks_->ref_count(e.block) == 1) candidates.emplace_back(e.last_used, -e.depth, h);
  const size_t k = std::min(candidates.size(), static_cast<size_t>(n));
  std::partial_sort(candidates.begin(), candidates.begin() + static_cast<std::ptrdiff_t>(k), candidates.end());
  for (size_t i = 0; i < k; ++i) {
    auto it = entries_.find(std::get<2>(candidates[i]));
    blocks_->release(it->second.block);
    entries_.erase(it);
  }
  return static_cast<int32_t>(k);
}

void PrefixCache::clear() {
  for (const auto& [h, e] : entries_) blocks_->release(e.block);
  entries_.clear();
}

int32_t PrefixCache::evictable() const {
  int32_t n = 0;
  for (const auto& [h, e] : entries_) n += !blocks_->is_open(e.block) && blocks_->ref_count(e.block) == 1;
  return n;
}

}  // namespace kestrel
