// Host-side planning of the CUDA attention kernels over code pages (no GPU needed): the bytes the split
// planner counts per key agree with the cache format's own accounting, a warp's stage fits its ring slot
// and stays within the 32 table entries a warp shuffles, splits cover the sequence in whole stages, and the
// kernels decline the geometries they are not built for.
#ifdef KESTREL_HAVE_CUDA

#include <gtest/gtest.h>

#include "backends/cuda/kernels.h"
#include "engine/kv_format.h"

namespace kestrel::backends::cuda {
namespace {

AttentionLaunch launch_for(const KvFormat& f, int n_seqs, int head_dim, int block_size = 16) {
  AttentionLaunch a;
  a.n_seqs = n_seqs;
  a.n_heads = 32;
  a.n_kv_heads = 8;
  a.head_dim = head_dim;
  a.block_size = block_size;
  a.kv_t = f.k;
  a.kv_group = f.group;
  return a;
}

TEST(CudaDecodePlan, CountsTheFormatsBytes) {
  for (const char* name : {"fp8", "int8", "int4", "int2"}) {
    const KvFormat f = *kv_format_from_name(name);
    for (int d : {64, 128}) {
      const AttentionLaunch a = launch_for(f, 1, d);
      EXPECT_DOUBLE_EQ(code_bytes_per_key(a), static_cast<double>(f.bytes_per_token_layer(1, d))) << name << " d" << d;
    }
  }
  // The 2-bit format streams 5.3x fewer bytes than bf16 pages (512 per key and head at d128).
  EXPECT_DOUBLE_EQ(code_bytes_per_key(launch_for(*kv_format_from_name("int2"), 1, 128)), 96.0);
}

TEST(CudaDecodePlan, StagesFitTheRingAndTheTableShuffle) {
  for (const char* name : {"fp8", "int8", "int4", "int2"}) {
    const KvFormat f = *kv_format_from_name(name);
    for (int bs : {1, 4, 16, 32})
      for (int cap : {0, 32}) {
        const AttentionLaunch a = launch_for(f, 1, 128, bs);
        const int kw = code_keys_per_warp(a, cap);
        EXPECT_EQ(kw % 16, 0) << name;
        EXPECT_LE(kw * code_bytes_per_key(a), kCodeSlotBytes) << name;  // one warp's ring slot
        EXPECT_LE(kw, kCodeMaxKeysPerWarp) << name;
        EXPECT_LE((kw - 1) / bs + 2, 32) << name << " bs" << bs;  // blocks a stage touches
        if (cap) EXPECT_EQ(cap % kw, 0) << name;
      }
  }
  // Larger stages for narrower codes: the same bytes in flight per warp.
  EXPECT_EQ(code_keys_per_warp(launch_for(*kv_format_from_name("int8"), 1, 128), 0), 32);
  EXPECT_EQ(code_keys_per_warp(launch_for(*kv_format_from_name("int4"), 1, 128), 0), 32);
  EXPECT_EQ(code_keys_per_warp(launch_for(*kv_format_from_name("int2"), 1, 128), 0), 64);
}

TEST(CudaDecodePlan, SplitsCoverTheSequenceInWholeStages) {
  for (const char* name : {"fp8", "int8", "int4", "int2"})
    for (auto [n_seqs, kv_len] : {std::pair{1, 131072}, {1, 32768}, {32, 8192}, {3, 100}}) {
      const AttentionLaunch a = launch_for(*kv_format_from_name(name), n_seqs, 128);
      const DecodePlan p = plan_attention_decode(a, kv_len, 132);
      const int stage = p.warps * p.keys_per_warp;
      EXPECT_EQ(p.warps, 8) << name;
      EXPECT_GT(p.keys_per_warp, 0) << name;
      EXPECT_EQ(p.chunk % stage, 0) << name;
      EXPECT_GE(int64_t{p.chunk} * p.splits, kv_len) << name;
      EXPECT_LT(int64_t{p.chunk} * (p.splits - 1), kv_len) << name;  // no empty split
      EXPECT_EQ(p.workspace > 0, p.splits > 1) << name;
      const DecodePlan fixed = plan_attention_decode_fixed(a, kv_len);
      EXPECT_EQ(fixed.chunk, kFixedSplitKeys);
      EXPECT_EQ(kFixedSplitKeys % (fixed.warps * fixed.keys_per_warp), 0) << name;
    }
}

// The code-page kernels are bound by their decode instructions, not only by HBM: a single long sequence
// must keep (nearly) every SM busy in every wave, whatever the planned length (a graph plans for the cache's capacity).
// An earlier model let 80 of 132 SMs run 1x128K int2 (1.5x slower in `kestrel bench` than in the kernel bench).
TEST(CudaDecodePlan, CodePagesFillTheSms) {
  for (const char* name : {"fp8", "int8", "int4", "int2"})
    for (int max_len : {131072, 131072 + 576, 140000, 32768 + 100}) {
      const AttentionLaunch a = launch_for(*kv_format_from_name(name), 1, 128);
      const DecodePlan p = plan_attention_decode(a, max_len, 132);
      const int blocks = p.splits * a.n_kv_heads, last_wave = blocks - (blocks - 1) / 132 * 132;
      EXPECT_GE(last_wave, 120) << name << " " << max_len << ": " << blocks << " blocks";
    }
}

TEST(CudaDecodePlan, DeclinesWhatTheKernelsAreNotBuiltFor) {
  EXPECT_EQ(decode_codes_decline(DType::U2, 128, 32, 16), nullptr);
  EXPECT_EQ(decode_codes_decline(DType::F8E4M3, 128, 64, 16), nullptr);
  EXPECT_NE(decode_codes_decline(DType::F8E4M3, 64, 64, 16), nullptr);  // one 2-byte scale per row
  EXPECT_NE(decode_codes_decline(DType::U8, 96, 32, 16), nullptr);      // no tiled kernel for d96
  EXPECT_NE(decode_codes_decline(DType::BF16, 128, 64, 16), nullptr);   // not a code page
  EXPECT_EQ(prefill_codes_decline(DType::F8E4M3, 64), nullptr);
  EXPECT_EQ(prefill_codes_decline(DType::U2, 32), nullptr);
  EXPECT_NE(prefill_codes_decline(DType::U4, 4), nullptr);
  EXPECT_NE(prefill_codes_decline(DType::Q8_0, 32), nullptr);
}

}  // namespace
}  // namespace kestrel::backends::cuda

#endif  // KESTREL_HAVE_CUDA
