// Launchers for the CUDA kernels, one family per .cu file. They take raw device pointers and sizes that
// the callers (register.cpp, sampling.cpp) have already validated, and check the launch itself. This
// header stays free of fmt and of CUDA-only types beyond cudaStream_t so both compilers can read it.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace kestrel::ops {
struct SampleRow;
struct PenaltyEntry;
struct SampleOut;
}  // namespace kestrel::ops

namespace kestrel::backends::cuda {

// Flags that kernels raise for bad indices they can't throw on, one word per token row of the step (the
// lane's row-error words, ops/runtime.h; the values are ops::RowError's). Rows past the capacity share the
// last word.
enum ErrorFlag : unsigned { kErrTokenId = 1u, kErrKvSlot = 2u };
struct ErrorSink {
  unsigned* words = nullptr;
  int capacity = 0;
};

// embed.cu: out[t, :] = scale * table[ids[t], :]; table f32/f16/bf16, out f32/bf16. Bad ids give a zero row
// and raise kErrTokenId on row t.
void launch_embed(DType table_t, const void* table, int64_t vocab, int64_t dim, const int32_t* ids, int64_t n,
                  DType out_t, void* out, float scale, ErrorSink errors, cudaStream_t stream);
// embed.cu: ops::scatter_rows, src and dst of type t (f32/bf16), dst [t_rows, dim].
void launch_scatter_rows(DType t, const void* src, const int32_t* rows, int64_t n, int64_t dim, void* dst,
                         int64_t t_rows, cudaStream_t stream);

// rmsnorm.cu: x, y f32/bf16 (same type); w f32/bf16.
void launch_rmsnorm(DType t, const void* x, DType w_t, const void* w, float eps, void* y, int64_t rows, int64_t dim,
                    cudaStream_t stream);
// x += r, then y = rmsnorm(x) * w; y may alias r.
void launch_add_rmsnorm(DType t, void* x, const void* r, DType w_t, const void* w, float eps, void* y, int64_t rows,
                        int64_t dim, cudaStream_t stream);

// elementwise.cu: f32/bf16, all operands of type t.
void launch_add(DType t, const void* a, const void* b, void* y, int64_t n, cudaStream_t stream);

// encoder_ops.cu, the encoder's ops (ops.h layernorm, gelu, encoder_attention); activations f32 or bf16 (`t`),
// arithmetic in f32. LayerNorm: w, b f32 [dim]; y may alias x. GELU: the exact (erf) one; y may alias x.
void launch_layernorm(DType t, const void* x, const float* w, const float* b, float eps, void* y, int64_t rows,
                      int64_t dim, cudaStream_t stream);
void launch_gelu(DType t, const void* x, void* y, int64_t n, cudaStream_t stream);
// Bidirectional attention over stacked sequences: qkv [T, 3 H D] (q | k | v a row), out [T, H, D], key_mask
// i32 [T] on the device or null; `seqs` (host) are disjoint row ranges. D at most kEncoderMaxHeadDim.
constexpr int kEncoderMaxHeadDim = 128;
struct EncoderSeqRows {
  int begin = 0, len = 0;
};
struct EncoderAttentionLaunch {
  DType act_t = DType::F32;
  const void* qkv = nullptr;
  const int* key_mask = nullptr;
  void* out = nullptr;
  const EncoderSeqRows* seqs = nullptr;
  int n_seqs = 0, H = 0, D = 0;
  float scale = 1.f;
};
void launch_encoder_attention(const EncoderAttentionLaunch& a, cudaStream_t stream);
// The activation of a gated MLP: SiLU (SwiGLU: Llama, Qwen) or tanh-approximated GELU (GeGLU: Gemma).
enum class GatedAct { Silu, GeluTanh };
// y = act(gate) * up, elementwise.
void launch_act_mul(DType t, GatedAct act, const void* gate, const void* up, void* y, int64_t n, cudaStream_t stream);
// y[t, i] = act(gate_up[t, i]) * gate_up[t, F + i]; gate_up [rows, 2F], y [rows, F].
void launch_gated(DType t, GatedAct act, const void* gate_up, void* y, int64_t rows, int64_t F, cudaStream_t stream);
// y[r, :] += bias (f32), y f32/bf16 [rows, n].
void launch_add_bias(DType t, void* y, const float* bias, int64_t rows, int64_t n, cudaStream_t stream);

// rope.cu: x [T, H, D] f32/bf16 in place; inv_freq (host, rot_dim/2 values) is passed by value so the
// launch is graph-capturable.
constexpr int kMaxRopePairs = 256;
void launch_rope(DType t, void* x, const int32_t* positions, int64_t T, int64_t H, int64_t D, bool adjacent,
                 int rot_dim, const float* inv_freq, cudaStream_t stream);

// Where a cache write stores: pages of cache_t [n_slots, row]; for code pages (F8E4M3, U8, U4) also f16
// params [n_slots, row / group, P] (core/kv_codec.h).
struct KvPages {
  DType cache_t = DType::BF16;
  void* k = nullptr;
  void* v = nullptr;
  void* k_params = nullptr;
  void* v_params = nullptr;
  int group = 0;
  int64_t n_slots = 0;
};

// rope.cu: the fused q/k/v stage (ops::rope_kv_write): qkv [T, (H + 2 Hkv) * D] (act_t) -> optional per-head
// RMSNorm of q and k, rotation, q into q_out [T, H, D], k and v into the caches at slots (bad slots are
// skipped and raise kErrKvSlot).
struct RopeKvWriteLaunch {
  DType act_t = DType::BF16;
  const void* qkv = nullptr;
  const int32_t* positions = nullptr;
  const int32_t* slots = nullptr;
  int64_t T = 0;
  int H = 0, Hkv = 0, D = 0;
  bool adjacent = false;
  int rot_dim = 0;
  const float* inv_freq = nullptr;  // host, rot_dim / 2 values
  const float* q_norm = nullptr;    // device f32 [D] or null
  const float* k_norm = nullptr;
  float eps = 0.f;
  void* q_out = nullptr;
  KvPages pages;
  ErrorSink errors;
};
constexpr int kMaxFusedHeadDim = 512;
void launch_rope_kv_write(const RopeKvWriteLaunch& l, cudaStream_t stream);

// kv_write.cu: k, v [T, row] (f32/bf16) into the pages (f32/bf16/f16 values, or codes encoded by
// core/kv_codec.h). Bad slots are skipped and raise kErrKvSlot on their row.
void launch_kv_write(DType src_t, const void* k, const void* v, const int32_t* slots, int64_t T, int64_t row,
                     const KvPages& pages, ErrorSink errors, cudaStream_t stream);

// Attention over the paged bf16 cache ([num_blocks, block_size, n_kv_heads, head_dim]); q/out bf16
// [T, n_heads, head_dim]; block_tables i32 [n_seqs, max_blocks]; seq_info i32 [n_seqs, 3].
struct AttentionLaunch {
  const void* q = nullptr;
  void* out = nullptr;
  const void* k_cache = nullptr;
  const void* v_cache = nullptr;
  const int32_t* block_tables = nullptr;
  int max_blocks = 0;
  const int32_t* seq_info = nullptr;
  int n_seqs = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int block_size = 0;
  float scale = 1.f;
  int window = 0;  // > 0: sliding window (AttentionBatch::window); only the generic kernel takes one
  // K and V pages: bf16 values, or codes (F8E4M3, U8, U4, U2) with f16 params per group of
  // kv_group elements ([.., n_kv_heads, head_dim / kv_group, P], core/kv_codec.h).
  DType kv_t = DType::BF16;
  const void* k_params = nullptr;
  const void* v_params = nullptr;
  int kv_group = 0;
};

// attention_prefill.cu: FlashAttention-2 style tiled causal attention, any q_len per sequence, over bf16
// pages or code pages (decoded to f16 tiles). Why it cannot read code pages of this type, or null.
void launch_attention_prefill(const AttentionLaunch& a, int max_q_len, cudaStream_t stream);
const char* prefill_codes_decline(DType kv_t, int group);

// attention_generic.cu: plain causal attention for any even head_dim <= kGenericMaxHeadDim, with or without a
// sliding window (what the tiled prefill and decode kernels do not cover), prefill and decode alike.
constexpr int kGenericMaxHeadDim = 256;
void launch_attention_generic(const AttentionLaunch& a, int max_q_len, cudaStream_t stream);

// attention_decode.cu: split-KV decode (q_len == 1 for every sequence) with an in-kernel combine.
struct DecodePlan {
  int splits = 1;            // KV splits per (sequence, head group): grid.x, one wave of one block per SM
  int chunk = 0;             // keys per split at max_kv_len; the kernel derives each sequence's from its kv_len
  bool fixed_chunk = false;  // every sequence splits at `chunk` keys (batch-invariant mode)
  int head_chunks = 1;       // groups of up to 16 query heads per KV head handled by separate blocks
  int warps = 8;             // block shape: 8 (one block per SM, long contexts) or 2 (many short sequences)
  int keys_per_warp = 0;     // code pages: keys a warp copies per stage (code_keys_per_warp)
  size_t workspace = 0;      // bytes of scratch for the split partials
  int counters = 0;          // i32 merge tickets: zero before the first launch; every launch leaves them zero
};
DecodePlan plan_attention_decode(const AttentionLaunch& a, int max_kv_len, int sms);
// Batch-invariant mode: narrow blocks and kFixedSplitKeys keys per split whatever the batch, so a
// sequence's splits (and the order its partials merge in) depend on its own length alone.
constexpr int kFixedSplitKeys = 256;
DecodePlan plan_attention_decode_fixed(const AttentionLaunch& a, int max_kv_len);
void launch_attention_decode(const AttentionLaunch& a, const DecodePlan& plan, void* workspace, int* counters,
                             cudaStream_t stream);
// attention_decode_codes.cu: the same over code pages (F8E4M3, U8, U4, U2 with their params). Why it cannot
// read pages of this type and geometry, or null.
const char* decode_codes_decline(DType kv_t, int head_dim, int group, int block_size);
// Compressed K + V bytes per key and KV head, params included.
double code_bytes_per_key(const AttentionLaunch& a);
// A warp's ring slot (codes + params of one stage) and the most keys a stage holds.
constexpr int kCodeSlotBytes = 9216, kCodeMaxKeysPerWarp = 128;
// Keys a warp copies per stage: a multiple of 16 that fills its ring slot, dividing `cap` when cap > 0.
int code_keys_per_warp(const AttentionLaunch& a, int cap);
void launch_decode_codes(const AttentionLaunch& a, const DecodePlan& plan, void* workspace, int* counters,
                         cudaStream_t stream);

// gemv.cu: y[M, N] = x[M, K] . w[N, K]^T (+ bias) for 1 <= M <= kFlatMaxM on tensor cores; x bf16, w bf16
// or a GGUF weight type (decoded on the fly to bf16, weight_rows.cuh); y bf16/f32. Needs K % 32 == 0 and
// 16-byte aligned bf16 rows. The default dispatch uses it up to kGemvMaxM rows for bf16 weights (cuBLASLt
// beyond), batch-invariant mode at every M <= kFlatMaxM; its reduction is fixed_reduction.cuh's, so it
// agrees bitwise with gemm_fixed (on the dequantized matrix, for quantized weights).
constexpr int kGemvMaxM = 8;
constexpr int kFlatMaxM = 64;
void launch_gemv(const void* x, DType w_t, const void* w, const float* bias, DType y_t, void* y, int M, int N, int K,
                 int sms, cudaStream_t stream);

// qmv.cu: the same product for 1 <= M <= kQmvMaxM with w of a GGUF weight type, decoded in f32 on the fly
// (the default dispatch's decode path for the types cuda.qmma does not take). Needs whole blocks per row and 16-byte
// aligned x rows. Measured on the H100 (Q4_K, llama3-8b shapes; flat GEMM vs cuda.qmv): qmv is the faster up to 4 rows
// (qkv 27.5 vs 26.6 us, gate_up 129.1 vs 110.6 at 4), the flat GEMM from 8 (gate_up 130.1 vs 180.8).
constexpr int kQmvMaxM = 4;
void launch_qmv(const void* x, DType w_t, const void* w, const float* bias, DType y_t, void* y, int M, int N, int K,
                cudaStream_t stream);

// qmma.cu: the same product for 1 <= M <= kQmmaMaxM with Q4_K or Q6_K weights (qmma_supports) in their GGUF
// layout, on tensor cores: Q4_K's weights exact, Q6_K's rounded to f16 (2^-12 at most), x in f16 (so |x|
// must stay below 65504). Needs K % 256 == 0 and 16-byte aligned x rows.
constexpr int kQmmaMaxM = 16;
bool qmma_supports(DType w_t);
void launch_qmma(const void* x, DType w_t, const void* w, const float* bias, DType y_t, void* y, int M, int N, int K,
                 cudaStream_t stream);

// gmv.cu: grouped integer weights (core/linear.h): b-bit code rows with f16 scales [N, G], optional f16
// zero points [N, G] (null: symmetric, 2^(b-1)) and optional act-order g_idx [K] (null: k / group_size).
struct GroupedWeight {
  DType codes_t = DType::U4;
  const void* codes = nullptr;
  size_t row_bytes = 0;  // of one code row
  const void* scales = nullptr;
  const void* zeros = nullptr;
  const int32_t* g_idx = nullptr;
  int group_size = 0;
  int groups = 0;  // G
};
// y[M, N] = x[M, K] . W^T (+ bias) for 1 <= M <= kGmvMaxM, W decoded exactly in f32 as it streams (each
// 16-byte load of codes lies in one group: one scale and zero point per load), x bf16 with 16-byte aligned
// rows, y bf16/f32. U2, U4 and U8 codes, groups in order (no g_idx); gmv_decline says why a weight is not
// taken. Up to 8 rows: at 8 a weight decoded into registers feeds 8 FMAs, and the f32 FMAs (not the
// memory) become the limit near there (docs/perf_notes.md), so larger M dequantizes for cuBLASLt.
constexpr int kGmvMaxM = 8;
const char* gmv_decline(DType codes_t, int K, int group_size, int groups, bool act_order);
void launch_gmv(const void* x, const GroupedWeight& w, const float* bias, DType y_t, void* y, int M, int N, int K,
                cudaStream_t stream);
// gmma.cu: the same product for U4 codes on tensor cores, any M (gmma_decline: groups of a multiple of 32
// codes or one per row, K % 128 == 0, no g_idx; x rows 16-byte aligned): up to kGmmaSmallM rows the code
// stream's kernel (K split over one wave of warps, x in registers), beyond it a tiled one (x staged in shared
// memory), `sms` sizing both. Weights rounded once to f16 ((code - zero) * scale), x in f16 (|x| < 65504).
constexpr int kGmmaSmallM = 16;
constexpr int kGmmaMinK1 = 8192;  // the shortest rows cuda.gmma takes for one token (register.cpp)
// Where the split-K kernel's slices meet: f32 partials and one ticket per 16 output channels. The tickets
// must be zero before the first launch; every launch leaves them zero.
struct GmmaScratch {
  float* partials = nullptr;
  int* tickets = nullptr;
};
struct GmmaScratchSize {
  size_t partials = 0;  // floats
  size_t tickets = 0;   // ints
};
// The scratch launch_gmma needs for this shape on `sms` SMs (none: zeros).
GmmaScratchSize gmma_scratch_size(DType y_t, int M, int N, int K, int sms);
const char* gmma_decline(DType codes_t, int K, int group_size, int groups, bool act_order);
void launch_gmma(const void* x, const GroupedWeight& w, const float* bias, DType y_t, void* y, int M, int N, int K,
                 int sms, const GmmaScratch& scratch, cudaStream_t stream);
// w8a8.cu (core/w8a8.h): each row of x (f32/bf16 [M, K]) as codes of code_t (I8 or F8E4M3, [M, K]) and its
// f32 scale; and y = acc * x_scales[m] * w_scales[n] (+ bias[n]) from a GEMM's unscaled acc (i32 or f32 [M, N]).
void launch_w8_quantize_rows(DType x_t, const void* x, int64_t M, int64_t K, DType code_t, void* codes, float* scales,
                             cudaStream_t stream);
void launch_w8_epilogue(DType acc_t, const void* acc, const float* x_scales, const float* w_scales, const float* bias,
                        DType y_t, void* y, int64_t M, int64_t N, cudaStream_t stream);
// The grouped weight as bf16 out[N, K] (any code type, g_idx or not; K % 8 == 0): each weight computed
// exactly in f32 and rounded once, the bits placement's --dequantize writes.
void launch_grouped_dequant_bf16(const GroupedWeight& w, void* out, int N, int K, cudaStream_t stream);

// dequant.cu: a GGUF-typed w[N, K] to bf16 out[N, K], the same bits the flat GEMM decodes.
void launch_dequant_bf16(DType w_t, const void* w, void* out, int N, int K, cudaStream_t stream);

// gemm_fixed.cu: the same product for any M with fixed_reduction.cuh's reduction (the flat GEMM up to
// kFlatMaxM rows, a tiled kernel beyond), so every output row's bits are independent of M. Same needs.
void launch_gemm_fixed(const void* x, const void* w, const float* bias, DType y_t, void* y, int M, int N, int K,
                       int sms, cudaStream_t stream);

// sampling.cu: ops::sample over f32 logits [R, V]: three kernels (logprobs, penalties, draw) whose blocks
// return at once for rows that do not ask for them, so one launch sequence serves every step (graphs).
// `masks` (n_masks rows of ceil(V/32) allow-bits, or null) are applied with the penalties.
void launch_sample(float* logits, int64_t R, int64_t V, const ops::SampleRow* rows, ops::PenaltyEntry* entries,
                   ops::SampleOut* out, const uint32_t* masks, int64_t n_masks, cudaStream_t stream);
// sampling.cu: ops::feed_sampled.
void launch_feed_sampled(int32_t* tokens, const int32_t* from, int64_t T, const ops::SampleOut* prev, int64_t R,
                         cudaStream_t stream);

}  // namespace kestrel::backends::cuda
