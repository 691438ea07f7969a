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
  a.set_length(9);
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

}  // namespace
}  // namespace kestrel
