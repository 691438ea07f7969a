#include "engine/kv_format.h"

#include <gtest/gtest.h>

#include "core/error.h"
#include "engine/kv_cache.h"

namespace kestrel {
namespace {

TEST(KvFormat, NamesSelectTypesAndGroups) {
  const KvFormat fp8 = *kv_format_from_name("fp8"), int8 = *kv_format_from_name("INT8"),
                 int4 = *kv_format_from_name("int4"), q80 = *kv_format_from_name("q8_0");
  EXPECT_EQ(fp8.k, DType::F8E4M3);
  EXPECT_EQ(fp8.group, 64);
  EXPECT_EQ(fp8.k_params(), 1);
  EXPECT_EQ(int8.v, DType::U8);
  EXPECT_EQ(int8.v_params(), 2);
  EXPECT_EQ(int4.k, DType::U4);
  EXPECT_EQ(int4.group, 32);
  EXPECT_EQ(q80.k, DType::Q8_0);
  EXPECT_EQ(q80.group, 0);
  EXPECT_TRUE(q80.quantized() && int4.quantized() && !kv_format_from_name("bf16")->quantized());
  EXPECT_FALSE(kv_format_from_name("int3").has_value());
  EXPECT_NE(kv_format_names().find("int4"), std::string::npos);
}

TEST(KvFormat, BytesPerTokenCountScales) {
  // The llama3-8b shape: 8 kv heads of 128 (a 1024-element row), K and V.
  EXPECT_EQ(KvFormat::plain(DType::BF16).bytes_per_token_layer(8, 128), 4096u);
  EXPECT_EQ(kv_format_from_name("fp8")->bytes_per_token_layer(8, 128), 2048u + 16 * 2 * 2);
  EXPECT_EQ(kv_format_from_name("int8")->bytes_per_token_layer(8, 128), 2048u + 16 * 4 * 2);
  EXPECT_EQ(kv_format_from_name("int4")->bytes_per_token_layer(8, 128), 1024u + 32 * 4 * 2);
  EXPECT_EQ(kv_format_from_name("q4_0")->bytes_per_token_layer(8, 128), 2 * 1024u / 32 * 18);
  EXPECT_EQ(kv_format_from_name("int2")->bytes_per_token_layer(8, 128), 512u + 32 * 4 * 2);
  // SKVQ K2/V1.5 outside the window: 2-bit slots and a scale and min per 64, at most 1/6 of bf16 (the goal).
  const size_t skvq = kv_format_from_name("skvq")->bytes_per_token_layer(8, 128);
  EXPECT_EQ(skvq, 512u + 16 * 4 * 2);
  EXPECT_LE(6 * skvq, 4096u);
}

TEST(KvFormat, SkvqKeepsSinksAndAWindowAndTernaryValues) {
  const KvFormat f = *kv_format_from_name("skvq");
  EXPECT_EQ(f.name, "skvq-k2v1.5");
  EXPECT_EQ(f.k, DType::U2);
  EXPECT_EQ(f.v_qmax, 2);
  EXPECT_EQ(f.k_qmax, 0);
  EXPECT_EQ(f.sinks, 5);
  EXPECT_EQ(f.window, 128);
  EXPECT_TRUE(f.windowed() && f.reorders());
  EXPECT_EQ(kv_format_from_name("skvq-k2v2")->v_qmax, 0);
  EXPECT_FALSE(kv_format_from_name("int2")->windowed());
  EXPECT_FALSE(kv_format_on_cuda(f));  // CPU only so far
}

TEST(KvFormat, KiviKeysPerChannelOverTokenGroupsWithAWindow) {
  const KvFormat f = *kv_format_from_name("kivi2");
  EXPECT_EQ(f.k, DType::U2);
  EXPECT_EQ(f.v, DType::U2);
  EXPECT_EQ(f.k_token_group, 32);
  EXPECT_EQ(f.group, 32);  // values: per token, 32 channels a group
  EXPECT_EQ(f.window, 128);
  EXPECT_EQ(f.sinks, 0);
  EXPECT_TRUE(f.windowed() && !f.reorders());
  EXPECT_EQ(kv_format_from_name("kivi4")->k, DType::U4);
  EXPECT_FALSE(kv_format_on_cuda(f));  // CPU only, as SKVQ
  EXPECT_NE(kv_format_names().find("kivi2"), std::string::npos);
  // Bytes outside the window, llama3-8b shape: 2-bit keys and values (256 bytes each), the keys' scale and min
  // per channel and 32 tokens (1024 channels x 4 bytes / 32 = 128 a token), the values' per 32 channels (128):
  // 3 bits an element, as int2, where SKVQ K2/V1.5 stores 2.5.
  const size_t kivi2 = f.bytes_per_token_layer(8, 128);
  EXPECT_EQ(kivi2, 256u + 128 + 256 + 128);
  EXPECT_EQ(kivi2, kv_format_from_name("int2")->bytes_per_token_layer(8, 128));
  EXPECT_LT(kv_format_from_name("skvq")->bytes_per_token_layer(8, 128), kivi2);
  EXPECT_EQ(kv_format_from_name("kivi4")->bytes_per_token_layer(8, 128), 512u + 128 + 512 + 128);
  // Blocks hold whole token groups.
  EXPECT_EQ(kv_block_size(f, 16), 32);
  EXPECT_EQ(kv_block_size(f, 48), 64);
  EXPECT_EQ(kv_block_size(f, 64), 64);
  EXPECT_EQ(kv_block_size(*kv_format_from_name("skvq"), 16), 16);
  // Values are grouped by 32 channels: a head of 80 does not split.
  EXPECT_NO_THROW(check_kv_format(f, 64));
  EXPECT_THROW(check_kv_format(f, 80), Error);
}

TEST(KvFormat, KiviCacheAllocatesPerChannelKeyParams) {
  KvCacheConfig c{.n_layers = 2,
                  .n_kv_heads = 3,
                  .head_dim = 64,
                  .block_size = 64,
                  .num_blocks = 5,
                  .format = *kv_format_from_name("kivi2")};
  KvCache cache(c, {});
  const ops::KvLayer& l = cache.layer(1);
  EXPECT_EQ(l.k_params.shape, (std::vector<int64_t>{5, 2, 3, 64, 2}));  // two token groups a block
  EXPECT_EQ(l.v_params.shape, (std::vector<int64_t>{5, 64, 3, 2, 2}));
  EXPECT_EQ(l.k_coding.token_group, 32);
  EXPECT_EQ(l.v_coding.token_group, 0);
  EXPECT_FALSE(l.k_open.empty());  // the window's open blocks
  // The parameter pools are what bytes_per_token_layer counts.
  const size_t bytes = l.k.nbytes() + l.v.nbytes() + l.k_params.nbytes() + l.v_params.nbytes();
  EXPECT_EQ(bytes, c.format.bytes_per_token_layer(3, 64) * 5 * 64);
  c.block_size = 16;  // half a token group
  EXPECT_THROW(KvCache(c, {}), Error);
}

TEST(KvFormat, DevicesAndHeadSizes) {
  EXPECT_TRUE(kv_format_on_cuda(*kv_format_from_name("bf16")));
  EXPECT_TRUE(kv_format_on_cuda(*kv_format_from_name("int4")));
  EXPECT_TRUE(kv_format_on_cuda(*kv_format_from_name("int2")));
  EXPECT_FALSE(kv_format_on_cuda(*kv_format_from_name("q8_0")));
  EXPECT_FALSE(kv_format_on_cuda(*kv_format_from_name("f32")));
  EXPECT_NO_THROW(check_kv_format(*kv_format_from_name("int8"), 128));
  EXPECT_THROW(check_kv_format(*kv_format_from_name("int8"), 96), Error);  // 64-element groups
  EXPECT_NO_THROW(check_kv_format(*kv_format_from_name("int4"), 96));
}

TEST(KvFormat, CacheAllocatesParamsAndHoldsMoreTokens) {
  const KvCacheConfig bf16{.n_layers = 2,
                           .n_kv_heads = 2,
                           .head_dim = 64,
                           .block_size = 4,
                           .num_blocks = 3,
                           .format = KvFormat::plain(DType::BF16)};
  KvCacheConfig int8 = bf16;
  int8.format = *kv_format_from_name("int8");
  KvCache cache(int8, {});
  const ops::KvLayer& l = cache.layer(1);
  EXPECT_EQ(l.k.dtype, DType::U8);
  ASSERT_TRUE(l.has_params());
  EXPECT_EQ(l.k_params.shape, (std::vector<int64_t>{3, 4, 2, 1, 2}));
  EXPECT_EQ(l.group(), 64);
  EXPECT_EQ(cache.bytes_per_token(), 2 * int8.format.bytes_per_token_layer(2, 64));
  EXPECT_FALSE(KvCache(bf16, {}).layer(0).has_params());
  // The default budget is bytes: a smaller format holds more tokens (up to the per-sequence cap).
  EXPECT_GT(default_kv_tokens(int8, 256, 1 << 20), default_kv_tokens(bf16, 256, 1 << 20));
  KvCacheConfig bad = int8;
  bad.head_dim = 32;
  EXPECT_THROW(KvCache(bad, {}), Error);
}

}  // namespace
}  // namespace kestrel
