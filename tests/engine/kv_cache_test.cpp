#include "engine/kv_cache.h"

#include <gtest/gtest.h>

#include "core/error.h"

namespace kestrel {
namespace {

KvCache small_cache(int32_t blocks) {
  return KvCache(KvCacheConfig{.n_layers = 1, .n_kv_heads = 1, .head_dim = 8, .block_size = 4, .num_blocks = blocks},
                 {});
}

TEST(KvCache, ReserveIsAllOrNothingAndTruncateFrees) {
  KvCache cache = small_cache(4);
  SequenceKv a, b;
  ASSERT_TRUE(a.reserve(cache, 9));  // 3 blocks
  EXPECT_EQ(cache.blocks().num_free(), 1);
  EXPECT_FALSE(b.reserve(cache, 8));  // needs 2, only 1 free: nothing taken
  EXPECT_EQ(cache.blocks().num_free(), 1);
  EXPECT_TRUE(b.block_table().empty());
  a.set_length(cache, 9);
  a.truncate(cache, 4);
  EXPECT_EQ(a.block_table().size(), 1u);
  EXPECT_EQ(a.length(), 4);
  EXPECT_EQ(cache.blocks().num_free(), 3);
  EXPECT_TRUE(b.reserve(cache, 8));
  a.release(cache);
  b.release(cache);
  EXPECT_EQ(cache.blocks().num_free(), 4);
}

TEST(KvCache, SlotsFollowTheBlockTable) {
  KvCache cache = small_cache(8);
  SequenceKv a, b;
  ASSERT_TRUE(a.reserve(cache, 4));
  ASSERT_TRUE(b.reserve(cache, 4));
  ASSERT_TRUE(a.reserve(cache, 6));
  EXPECT_EQ(a.slot(cache, 5), a.block_table()[1] * 4 + 1);
  EXPECT_NE(a.block_table()[1], b.block_table()[0]);
  EXPECT_THROW(a.slot(cache, 8), Error);
}

TEST(KvCache, ReferenceCountsShareBlocks) {
  BlockAllocator alloc(2);
  auto b = alloc.allocate();
  ASSERT_TRUE(b);
  alloc.retain(*b);
  alloc.release(*b);
  EXPECT_EQ(alloc.num_free(), 1);
  alloc.release(*b);
  EXPECT_EQ(alloc.num_free(), 2);
  EXPECT_THROW(alloc.release(*b), Error);
}

// A windowed cache (SKVQ's lifecycle) of 4-token blocks: 5 sink tokens (2 blocks) and an 8-token window.
KvCache windowed_cache(int32_t blocks, int max_sequences = 1) {
  KvFormat f = *kv_format_from_name("skvq");
  f.window = 8;
  return KvCache(KvCacheConfig{.n_layers = 1,
                               .n_kv_heads = 1,
                               .head_dim = 64,
                               .block_size = 4,
                               .num_blocks = blocks,
                               .format = f,
                               .max_sequences = max_sequences},
                 {});
}

TEST(KvCacheWindow, SinksStayOpenWindowBlocksSealAsTheyLeave) {
  KvCache cache = windowed_cache(16);
  const BlockAllocator& a = cache.blocks();
  const int32_t open_total = a.num_free_open();
  EXPECT_EQ(cache.sink_blocks(), 2);
  EXPECT_EQ(open_total, open_blocks_per_sequence(cache.config()) + 2);  // one sequence, and a prompt's sinks
  SequenceKv s;
  // A 30-token prompt in one step: blocks 0-1 are sinks (open), 2..4 end at or before 30 - 8 = 22 and are born
  // sealed (codes, no seal needed), 5..7 are in the window (open).
  ASSERT_TRUE(s.reserve(cache, 30));
  EXPECT_TRUE(s.begin_step(cache, 30).empty());
  for (int j = 0; j < 8; ++j) EXPECT_EQ(a.is_open(s.block_table()[j]), j < 2 || j >= 5) << j;
  EXPECT_EQ(s.slot(cache, 21), s.block_table()[5] * 4 + 1);
  s.set_length(cache, 30);
  EXPECT_EQ(s.shareable_blocks(), 5);  // the sinks and the sealed blocks; no open window block
  // Decoding to 33: block 5 (positions 20-23) ends at 24 <= 33 - 8 = 25 and is sealed inside this step: the
  // write goes to its open block, attention already reads its code block.
  ASSERT_TRUE(s.reserve(cache, 33));
  const int32_t open5 = s.slot(cache, 20) / 4;
  const auto seals = s.begin_step(cache, 33);
  ASSERT_EQ(seals.size(), 1u);
  EXPECT_EQ(seals[0][0], open5);
  EXPECT_FALSE(a.is_open(seals[0][1]));
  EXPECT_EQ(s.block_table()[5], seals[0][1]);
  EXPECT_TRUE(a.is_open(s.block_table()[8]));  // the new block is in the window
  s.set_length(cache, 33);
  EXPECT_EQ(s.slot(cache, 20) / 4, seals[0][1]);
  EXPECT_EQ(s.shareable_blocks(), 6);
  // Everything comes back, open blocks included.
  s.release(cache);
  EXPECT_EQ(a.num_free(), 16);
  EXPECT_EQ(a.num_free_open(), open_total);
}

TEST(KvCacheWindow, ChunkedStepsNeverRunOutOfOpenBlocks) {
  KvCache cache = windowed_cache(64);
  SequenceKv s;
  ASSERT_TRUE(s.reserve(cache, 200));  // all at once (a session reserves the whole prompt first)
  for (int32_t len = 0; len < 200;) {
    const int32_t end = std::min(200, len + (len % 3 == 0 ? 7 : 1));
    for (const auto& [open, code] : s.begin_step(cache, end)) {
      EXPECT_TRUE(cache.blocks().is_open(open));
      EXPECT_FALSE(cache.blocks().is_open(code));
    }
    s.set_length(cache, end);
    len = end;
    // Open: the 2 sinks and the blocks the last 8 positions touch.
    int open = 0;
    for (size_t j = 0; j < s.block_table().size(); ++j) open += cache.blocks().is_open(s.block_table()[j]);
    EXPECT_LE(open, 2 + 3) << len;
  }
  s.release(cache);
  EXPECT_EQ(cache.blocks().num_free(), 64);
}

TEST(KvCacheWindow, TruncatingIntoASealedKiviBlockDropsItWhole) {
  KvFormat f = *kv_format_from_name("kivi2");
  f.window = 32;
  KvCache cache(
      KvCacheConfig{.n_layers = 1, .n_kv_heads = 1, .head_dim = 32, .block_size = 32, .num_blocks = 8, .format = f},
      {});
  SequenceKv s;
  ASSERT_TRUE(s.reserve(cache, 100));
  s.begin_step(cache, 100);  // blocks 0-1 end at or before 100 - 32: born sealed; 2-3 open
  s.set_length(cache, 100);
  EXPECT_EQ(s.shareable_blocks(), 2);
  EXPECT_EQ(s.truncate(cache, 90), 90);  // inside an open block: kept as asked
  EXPECT_EQ(s.truncate(cache, 40), 32);  // inside sealed block 1: its keys take no more tokens
  EXPECT_EQ(s.length(), 32);
  EXPECT_EQ(s.block_table().size(), 1u);
  EXPECT_EQ(s.truncate(cache, 32), 32);
  s.release(cache);
  EXPECT_EQ(cache.blocks().num_free(), 8);
  // Formats with per-token scales keep a sealed block's first tokens.
  KvCache skvq = windowed_cache(16);
  SequenceKv t;
  ASSERT_TRUE(t.reserve(skvq, 30));
  t.begin_step(skvq, 30);
  t.set_length(skvq, 30);
  EXPECT_EQ(t.truncate(skvq, 10), 10);
  t.release(skvq);
}

TEST(KvCacheWindow, PrefixSharingStopsWhereAFreshPrefillWouldHoldFullPrecision) {
  KvCache cache = windowed_cache(16);
  EXPECT_EQ(cache.shareable_prefix_blocks(6), 2);   // the sinks only
  EXPECT_EQ(cache.shareable_prefix_blocks(30), 5);  // (30 - 8) / 4
  KvCache plain = small_cache(4);
  EXPECT_GE(plain.shareable_prefix_blocks(30), 8);  // no window: every full block
}

}  // namespace
}  // namespace kestrel
