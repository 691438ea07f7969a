// The paged KV cache: per layer, K and V pools of fixed-size blocks ([num_blocks, block_size,
// n_kv_heads, head_dim] of the format's page types, quantized blocks carrying their scales); one
// BlockAllocator owns every block (reference-counted so the prefix cache can share full blocks); each
// sequence owns a block table. See docs/ARCHITECTURE.md ("KV cache") and docs/kv_cache.md (formats).
//
// Windowed formats (SKVQ) keep the sink tokens and a window of the most recent ones in full precision:
// a second, small pool of open (f16) blocks whose ids follow the code blocks'. A block's life: a sink block
// is open for good; any other block is written open while it lies in its sequence's window and is sealed
// (encoded into its code block by ops::kv_seal, inside the step, before attention reads it) in the step
// that moves it out; a block that is already out of the window when first written goes straight to codes.
// So which tokens are full precision depends on each sequence's own length alone: a block shared through
// the prefix cache is a sealed or a sink block, never an open window block. A block written straight to
// codes is written whole in that one step (the last position written is always in the window), which is
// what per-channel keys (KIVI: scales over a block's tokens) need of a direct write.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "engine/kv_format.h"
#include "ops/ops.h"

namespace kestrel {

class BlockAllocator {
 public:
  // Code blocks get ids [0, num_blocks), open blocks [num_blocks, num_blocks + num_open).
  explicit BlockAllocator(int32_t num_blocks, int32_t num_open = 0);
  // A free code (open) block with reference count 1, or nullopt when none is left.
  std::optional<int32_t> allocate();
  std::optional<int32_t> allocate_open();
  void retain(int32_t block);
  void release(int32_t block);  // returns the block to its free list when its count reaches 0
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }  // code blocks
  int32_t num_free_open() const { return static_cast<int32_t>(free_open_.size()); }
  int32_t num_total() const { return n_code_; }  // code blocks
  int32_t num_ids() const { return static_cast<int32_t>(refs_.size()); }
  bool is_open(int32_t block) const { return block >= n_code_; }
  int32_t ref_count(int32_t block) const;

 private:
  int32_t n_code_;
  std::vector<int32_t> free_, free_open_;
  std::vector<int32_t> refs_;
};

struct KvCacheConfig {
  int n_layers = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int block_size = 16;
  int32_t num_blocks = 0;
  KvFormat format;
  int max_sequences = 1;  // windowed formats: sequences whose open blocks the open pool holds at once
};

// Open blocks one sequence may hold during a step of a windowed format: its sink blocks, the window's
// blocks and as many again being sealed or born in the step.
int open_blocks_per_sequence(const KvCacheConfig& cfg);

// The default size of a cache serving up to `max_running` sequences of `n_ctx` positions: 1024 tokens per
// running sequence within 1 GiB (counted in the format's bytes, scales included, so a quantized cache holds
// more tokens), but always one whole context (the server's and the Python package's).
int64_t default_kv_tokens(const KvCacheConfig& cfg, int n_ctx, int max_running);

class KvCache {
 public:
  KvCache(const KvCacheConfig& cfg, const ops::Context& ctx);
  const KvCacheConfig& config() const { return cfg_; }
  ops::KvLayer& layer(int l) { return layers_.at(l); }
  const ops::KvLayer& layer(int l) const { return layers_.at(l); }
  std::span<ops::KvLayer> layers() { return layers_; }
  BlockAllocator& blocks() { return blocks_; }
  const BlockAllocator& blocks() const { return blocks_; }
  int block_size() const { return cfg_.block_size; }
  size_t bytes_per_token() const;  // all layers, K and V, scales included
  // Windowed formats: whole blocks of sinks, and whether block j is in the window of a sequence of
  // `length` positions (the last `window` positions touch it).
  int32_t sink_blocks() const;
  bool in_window(int32_t j, int32_t length) const;
  // How many leading blocks of a prompt of `prompt_len` tokens another sequence may share: all of them for
  // a format without a window; else the sink blocks and the blocks already out of the prompt's window (so a
  // prefix-cache hit reads what a fresh prefill would).
  int32_t shareable_prefix_blocks(int32_t prompt_len) const;

 private:
  KvCacheConfig cfg_;
  std::vector<ops::KvLayer> layers_;
  BlockAllocator blocks_;
};

// One sequence's view of the cache: its block table and how many positions hold valid K/V.
class SequenceKv {
 public:
  // The blocks attention reads: per logical block its code block, or its open block while it is open.
  const std::vector<int32_t>& block_table() const { return table_; }
  int32_t length() const { return length_; }
  int32_t capacity(const KvCache& cache) const { return static_cast<int32_t>(blocks_.size()) * cache.block_size(); }
  // Makes room for `new_length` positions; false (and no change) when the cache has too few free blocks.
  bool reserve(KvCache& cache, int32_t new_length);
  // Starts an empty sequence on blocks that already hold the K/V of its first positions (prefix-cache
  // hits the caller has retained); the sequence now owns those references.
  void adopt_prefix(const KvCache& cache, std::vector<int32_t> blocks);
  // Marks positions [0, new_length) as written (after a forward step); commits the step's seals.
  void set_length(KvCache& cache, int32_t new_length);
  // Windowed formats, before a step that brings the sequence to `end` positions: opens the window blocks
  // the step writes, and plans the seals of open blocks the step moves out of the window (their writes go
  // to the open block, attention reads the code block). Returns {open id, code id} pairs for ops::kv_seal.
  std::vector<std::array<int32_t, 2>> begin_step(KvCache& cache, int32_t end);
  // Leading blocks whose content is final and shareable (the prefix cache registers no open window block).
  int32_t shareable_blocks() const;
  // Forgets positions >= new_length and frees the blocks no longer needed; returns the length kept. That is
  // new_length except inside a sealed block of a per-channel key format (KIVI): its keys share scales over
  // all its tokens, so it takes no more of them and goes whole (the caller recomputes what it held).
  int32_t truncate(KvCache& cache, int32_t new_length);
  void release(KvCache& cache) { truncate(cache, 0); }
  // Cache slot of position p (block * block_size + offset) that a write goes to.
  int32_t slot(const KvCache& cache, int32_t p) const;

 private:
  void sync_table();

  std::vector<int32_t> blocks_;                  // per logical block its code block (sink blocks: their open block)
  std::vector<int32_t> open_;                    // per logical block its open window block, or -1
  std::vector<std::array<int32_t, 2>> sealing_;  // {logical block, open id} sealed by the step in flight
  std::vector<int32_t> spare_;                   // open blocks held for the window (so a step never runs out of them)
  std::vector<int32_t> table_;                   // what attention reads
  int32_t length_ = 0;
};

}  // namespace kestrel
