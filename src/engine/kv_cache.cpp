#include "engine/kv_cache.h"

#include <algorithm>
#include <climits>

#include "core/error.h"
#include "engine/kv_calibration.h"

namespace kestrel {

BlockAllocator::BlockAllocator(int32_t num_blocks, int32_t num_open)
    : n_code_(num_blocks), refs_(static_cast<size_t>(num_blocks) + std::max(0, num_open), 0) {
  KS_CHECK(num_blocks > 0, "the KV cache needs at least one block");
  free_.reserve(num_blocks);
  // Hand out low block ids first (pop from the back).
  for (int32_t b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
  for (int32_t b = num_ids() - 1; b >= num_blocks; --b) free_open_.push_back(b);
}

namespace {
std::optional<int32_t> pop(std::vector<int32_t>& free, std::vector<int32_t>& refs) {
  if (free.empty()) return std::nullopt;
  const int32_t b = free.back();
  free.pop_back();
  refs[b] = 1;
  return b;
}
}  // namespace

std::optional<int32_t> BlockAllocator::allocate() {
  return pop(free_, refs_);
}

std::optional<int32_t> BlockAllocator::allocate_open() {
  return pop(free_open_, refs_);
}

void BlockAllocator::retain(int32_t block) {
  KS_CHECK(block >= 0 && block < num_ids() && refs_[block] > 0, "retain of unowned KV block {}", block);
  ++refs_[block];
}

void BlockAllocator::release(int32_t block) {
  KS_CHECK(block >= 0 && block < num_ids() && refs_[block] > 0, "release of unowned KV block {}", block);
  if (--refs_[block] == 0) (is_open(block) ? free_open_ : free_).push_back(block);
}

int32_t BlockAllocator::ref_count(int32_t block) const {
  KS_CHECK(block >= 0 && block < num_ids(), "KV block {} out of range", block);
  return refs_[block];
}

int open_blocks_per_sequence(const KvCacheConfig& cfg) {
  const KvFormat& f = cfg.format;
  if (!f.windowed()) return 0;
  const int bs = cfg.block_size, sinks = (f.sinks + bs - 1) / bs, window = (f.window + bs - 1) / bs + 1;
  return sinks + 2 * window;
}

namespace {
// Open blocks of a cache: every sequence's share, and the sink blocks of as many finished prompts again
// (the prefix cache keeps them; it gives them back when a sequence runs short).
int32_t open_pool_blocks(const KvCacheConfig& cfg) {
  if (!cfg.format.windowed()) return 0;
  const int per = open_blocks_per_sequence(cfg), sinks = (cfg.format.sinks + cfg.block_size - 1) / cfg.block_size;
  return std::max(1, cfg.max_sequences) * (per + sinks);
}

// Channel orders of one layer's side as an i32 [n_kv_heads, head_dim] host tensor.
Tensor order_tensor(const std::vector<int32_t>& order, int hkv, int d) {
  Tensor t = Tensor::empty_host(DType::I32, {hkv, d});
  std::copy(order.begin(), order.end(), t.ptr<int32_t>());
  return t;
}
}  // namespace

KvCache::KvCache(const KvCacheConfig& cfg, const ops::Context& ctx)
    : cfg_(cfg), blocks_(cfg.num_blocks, open_pool_blocks(cfg)) {
  KS_CHECK(cfg.n_layers > 0 && cfg.n_kv_heads > 0 && cfg.head_dim > 0 && cfg.block_size > 0,
           "invalid KV cache configuration");
  check_kv_format(cfg.format, cfg.head_dim);
  const KvFormat& f = cfg.format;
  KS_CHECK(f.k_token_group == 0 || cfg.block_size % f.k_token_group == 0,
           "--kv-type {} quantizes keys over groups of {} tokens, so the KV block size must be a multiple of {}, "
           "not {} (kv_block_size picks one)",
           f.name, f.k_token_group, f.k_token_group, cfg.block_size);
  layers_.reserve(cfg.n_layers);
  const std::vector<int64_t> shape = {cfg.num_blocks, cfg.block_size, cfg.n_kv_heads, cfg.head_dim};
  const int64_t groups = f.group > 0 ? cfg.head_dim / f.group : 0;
  const int32_t n_open = blocks_.num_ids() - cfg.num_blocks;
  KS_CHECK(n_open == 0 || ctx.device == Device::Cpu, "--kv-type {} runs on the CPU only so far", f.name);
  const KvCalibration* calib = f.calibration.get();
  KS_CHECK(!calib || (calib->n_layers == cfg.n_layers && calib->n_kv_heads == cfg.n_kv_heads &&
                      calib->head_dim == cfg.head_dim),
           "the KV calibration does not match the cache's shape");
  const std::vector<std::array<float, 2>>* clips = nullptr;
  if (calib && calib->clips.contains(f.name)) clips = &calib->clips.at(f.name);
  for (int l = 0; l < cfg.n_layers; ++l) {
    ops::KvLayer layer{ops::allocate(ctx, f.k, shape), ops::allocate(ctx, f.v, shape)};
    if (groups > 0) {
      // Per-channel keys (KIVI): a scale and min per channel of each head and token group.
      layer.k_params =
          f.k_token_group > 0
              ? ops::allocate(
                    ctx, DType::F16,
                    {cfg.num_blocks, cfg.block_size / f.k_token_group, cfg.n_kv_heads, cfg.head_dim, f.k_params()})
              : ops::allocate(ctx, DType::F16, {cfg.num_blocks, cfg.block_size, cfg.n_kv_heads, groups, f.k_params()});
      layer.v_params =
          ops::allocate(ctx, DType::F16, {cfg.num_blocks, cfg.block_size, cfg.n_kv_heads, groups, f.v_params()});
    }
    layer.k_coding = {{}, f.k_clip, f.k_qmax, f.k_token_group};
    layer.v_coding = {{}, f.v_clip, f.v_qmax};
    if (calib) {
      layer.k_coding.perm = order_tensor(calib->layers[l].k_order, cfg.n_kv_heads, cfg.head_dim);
      layer.v_coding.perm = order_tensor(calib->layers[l].v_order, cfg.n_kv_heads, cfg.head_dim);
      if (clips) {
        layer.k_coding.clip = (*clips)[l][0];
        layer.v_coding.clip = (*clips)[l][1];
      }
    }
    if (n_open > 0) {
      const std::vector<int64_t> open_shape = {n_open, cfg.block_size, cfg.n_kv_heads, cfg.head_dim};
      layer.k_open = ops::allocate(ctx, DType::F16, open_shape);
      layer.v_open = ops::allocate(ctx, DType::F16, open_shape);
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

int32_t KvCache::sink_blocks() const {
  return (cfg_.format.sinks + cfg_.block_size - 1) / cfg_.block_size;
}

bool KvCache::in_window(int32_t j, int32_t length) const {
  return int64_t{j + 1} * cfg_.block_size > int64_t{length} - cfg_.format.window;
}

int32_t KvCache::shareable_prefix_blocks(int32_t prompt_len) const {
  if (!cfg_.format.windowed()) return INT32_MAX;
  return std::max(sink_blocks(), std::max(0, prompt_len - cfg_.format.window) / cfg_.block_size);
}

void SequenceKv::sync_table() {
  table_ = blocks_;
  for (size_t j = 0; j < open_.size(); ++j)
    if (open_[j] >= 0) table_[j] = open_[j];
  for (const auto& [j, id] : sealing_) table_[j] = blocks_[j];
}

bool SequenceKv::reserve(KvCache& cache, int32_t new_length) {
  const int32_t bs = cache.block_size();
  const size_t need = static_cast<size_t>((new_length + bs - 1) / bs);
  BlockAllocator& a = cache.blocks();
  if (!cache.config().format.windowed()) {
    if (need <= blocks_.size()) return true;
    if (static_cast<size_t>(a.num_free()) < need - blocks_.size()) return false;
    while (blocks_.size() < need) blocks_.push_back(*a.allocate());
    open_.resize(blocks_.size(), -1);
    sync_table();
    return true;
  }
  // Sink blocks are open blocks; the rest get code blocks (an open one too while in the window: begin_step,
  // from the spares held here so that it cannot run short).
  const int32_t sinks = cache.sink_blocks();
  const int spares_wanted = open_blocks_per_sequence(cache.config()) - sinks;
  int32_t code = 0, open = 0;
  for (size_t j = blocks_.size(); j < need; ++j) (static_cast<int32_t>(j) < sinks ? open : code) += 1;
  const int32_t held =
      static_cast<int32_t>(spare_.size()) +
      static_cast<int32_t>(std::count_if(open_.begin(), open_.end(), [](int32_t o) { return o >= 0; }));
  const int32_t more_spares = std::max(0, spares_wanted - held);
  if (a.num_free() < code || a.num_free_open() < open + more_spares) return false;
  for (int32_t i = 0; i < more_spares; ++i) spare_.push_back(*a.allocate_open());
  while (blocks_.size() < need)
    blocks_.push_back(static_cast<int32_t>(blocks_.size()) < sinks ? *a.allocate_open() : *a.allocate());
  open_.resize(blocks_.size(), -1);
  sync_table();
  return true;
}

std::vector<std::array<int32_t, 2>> SequenceKv::begin_step(KvCache& cache, int32_t end) {
  if (!cache.config().format.windowed()) return {};
  if (!sealing_.empty()) set_length(cache, length_);  // a step that failed after planning: its seals stand
  const int32_t bs = cache.block_size(), sinks = cache.sink_blocks();
  KS_CHECK(end >= length_ && static_cast<size_t>((end + bs - 1) / bs) <= blocks_.size(),
           "begin_step to {} positions: only {} blocks reserved", end, blocks_.size());
  std::vector<std::array<int32_t, 2>> seals;
  for (int32_t j = sinks; j < static_cast<int32_t>(blocks_.size()) && int64_t{j} * bs < end; ++j) {
    if (open_[j] >= 0 && !cache.in_window(j, end)) {
      sealing_.push_back({j, open_[j]});
      seals.push_back({open_[j], blocks_[j]});
    } else if (open_[j] < 0 && int64_t{j} * bs >= length_ && cache.in_window(j, end)) {
      KS_CHECK(!spare_.empty(), "internal error: a sequence ran out of open KV blocks");
      open_[j] = spare_.back();
      spare_.pop_back();
    }
  }
  sync_table();
  return seals;
}

void SequenceKv::set_length(KvCache& cache, int32_t new_length) {
  (void)cache;
  length_ = new_length;
  if (sealing_.empty()) return;
  for (const auto& [j, id] : sealing_) {
    open_[j] = -1;
    spare_.push_back(id);
  }
  sealing_.clear();
  sync_table();
}

int32_t SequenceKv::shareable_blocks() const {
  int32_t n = 0;
  while (n < static_cast<int32_t>(open_.size()) && open_[n] < 0) ++n;
  return n;
}

void SequenceKv::adopt_prefix(const KvCache& cache, std::vector<int32_t> blocks) {
  KS_CHECK(blocks_.empty() && length_ == 0, "adopt_prefix needs an empty sequence");
  blocks_ = std::move(blocks);
  open_.assign(blocks_.size(), -1);
  length_ = static_cast<int32_t>(blocks_.size()) * cache.block_size();
  sync_table();
}

int32_t SequenceKv::truncate(KvCache& cache, int32_t new_length) {
  KS_CHECK(new_length >= 0, "negative KV length");
  if (!sealing_.empty()) set_length(cache, length_);
  const int32_t bs = cache.block_size();
  const size_t cut = static_cast<size_t>(new_length / bs);
  if (cache.config().format.k_token_group > 0 && new_length < length_ && new_length % bs != 0 && cut < open_.size() &&
      open_[cut] < 0)
    new_length -= new_length % bs;
  const size_t keep = static_cast<size_t>((new_length + bs - 1) / bs);
  while (blocks_.size() > keep) {
    cache.blocks().release(blocks_.back());
    if (open_.back() >= 0) spare_.push_back(open_.back());
    blocks_.pop_back();
    open_.pop_back();
  }
  if (new_length == 0) {
    for (int32_t id : spare_) cache.blocks().release(id);
    spare_.clear();
  }
  if (length_ > new_length) length_ = new_length;
  sync_table();
  return length_;
}

int32_t SequenceKv::slot(const KvCache& cache, int32_t p) const {
  const int32_t bs = cache.block_size();
  KS_CHECK(p >= 0 && static_cast<size_t>(p / bs) < blocks_.size(), "position {} has no KV block", p);
  const int32_t j = p / bs;
  return (open_[j] >= 0 ? open_[j] : blocks_[j]) * bs + p % bs;
}

}  // namespace kestrel
