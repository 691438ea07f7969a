// The ops the model calls. Each op has several implementations ("variants": a CPU reference, SIMD CPU
// kernels, CUDA kernels, research techniques) registered with the dispatcher (dispatch.h), which picks one
// by device, capability and priority, or the one the user forced for A/B runs. Model code never branches
// on backend or technique.
//
// Conventions: tensors are row-major; activations are f32 on the CPU (bf16/f16/f32 on CUDA); weights
// are {out, in} in any weight dtype; every tensor passed to one call lives on ctx.device.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/linear.h"
#include "core/tensor.h"
#include "ops/context.h"

namespace kestrel::ops {

// Allocates an uninitialised tensor on ctx.device (host memory on the CPU; the device allocator that the
// CUDA backend installs otherwise).
Tensor allocate(const Context& ctx, DType dtype, std::vector<int64_t> shape);
// Copies a host tensor to ctx.device (returns the same storage on the CPU) and back.
Tensor upload(const Context& ctx, const Tensor& host);
void download(const Context& ctx, const Tensor& src, Tensor& host_dst);

// out[t, :] = scale * table[ids[t], :] converted to out.dtype. ids: i32 [T]; table: [V, D] any dtype.
// (Gemma multiplies its embeddings by sqrt(hidden); everything else gathers with scale 1.)
void embed(const Context& ctx, const Tensor& table, const Tensor& ids, Tensor& out, float scale = 1.f);

// dst[rows[i], :] = src[i, :]: rows of a step's activations replaced (prompt embeddings over the embedded
// tokens). src: [E, D] in dst's dtype; rows: i32 [E], distinct, each in [0, T); dst: [T, D], its other rows
// left as they are.
void scatter_rows(const Context& ctx, const Tensor& src, const Tensor& rows, Tensor& dst);

// y[t, n] = sum_k x[t, k] * w[n, k] (+ bias[n]). x: [T, K]; w: a linear operand of N outputs and K inputs
// in any format (core/linear.h: a float or GGUF-typed matrix, or grouped integer codes); bias: f32 [N] or
// null. y: [T, N]; must not alias x. Every linear layer of a model runs through it; a context's
// LinearObserver (context.h) sees x first.
void matmul(const Context& ctx, const Tensor& x, const Linear& w, Tensor& y, const Tensor* bias = nullptr);

// y = x / rms(x) * w over the last dimension (rows are independent). w: f32 [D]. y may alias x.
void rmsnorm(const Context& ctx, const Tensor& x, const Tensor& w, float eps, Tensor& y);

// y = a + b, elementwise, same shapes. y may alias a or b.
void add(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& y);

// The residual step of a pre-norm block in one pass: x += r, then y = x / rms(x) * w. x, r, y: [T, D]
// (x is the residual stream, updated in place); w: f32 [D]. y may alias r, not x.
void add_rmsnorm(const Context& ctx, Tensor& x, const Tensor& r, const Tensor& w, float eps, Tensor& y);

// y = silu(gate) * up, elementwise, same shapes. y may alias gate or up.
void silu_mul(const Context& ctx, const Tensor& gate, const Tensor& up, Tensor& y);

// silu_mul over the output of a fused gate/up projection: gate_up [T, 2F] holds gate in columns [0, F)
// and up in [F, 2F); y [T, F] must not alias it.
void swiglu(const Context& ctx, const Tensor& gate_up, Tensor& y);

// The GeGLU MLP's (Gemma) counterparts of silu_mul and swiglu: gelu(gate) * up with the tanh
// approximation of GELU (transformers' "gelu_pytorch_tanh"),
// gelu(g) = g / 2 * (1 + tanh(sqrt(2 / pi) * (g + 0.044715 g^3))).
void gelu_mul(const Context& ctx, const Tensor& gate, const Tensor& up, Tensor& y);
void geglu(const Context& ctx, const Tensor& gate_up, Tensor& y);

// y = (x - mean) / sqrt(var + eps) * w + b over the last dimension, with the biased variance (as
// torch.nn.LayerNorm; BERT's norms). w, b: f32 [D]. y may alias x.
void layernorm(const Context& ctx, const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor& y);

// y = x / 2 * (1 + erf(x / sqrt(2))), elementwise: the exact GELU (BERT's "gelu"; gelu_mul above is the
// tanh approximation). Same shapes; y may alias x.
void gelu(const Context& ctx, const Tensor& x, Tensor& y);

struct RopeParams {
  enum class Style : uint8_t {
    Adjacent,   // rotate pairs (2i, 2i+1): GGUF llama-family files (Q/K permuted by convert_hf_to_gguf)
    HalfSplit,  // rotate pairs (i, i + rot_dim/2): HF checkpoints and qwen-family GGUFs ("neox")
  };
  Style style = Style::HalfSplit;
  int rot_dim = 0;  // leading dims of each head that rotate; the rest pass through
  float theta = 10000.f;
  // Llama-3.1 frequency scaling ("rope_type": "llama3"); factor == 0 disables it.
  float llama3_factor = 0.f;
  float llama3_low_freq_factor = 1.f;
  float llama3_high_freq_factor = 4.f;
  int llama3_original_max_pos = 8192;
  float linear_factor = 1.f;  // "rope_type": "linear": positions are divided by it
  // Per-pair frequency divisors (GGUF "rope_freqs.weight", how llama.cpp stores Llama-3.1 scaling);
  // empty: none.
  std::vector<float> freq_factors;

  // Inverse frequency of pair i (0 <= i < rot_dim/2) with all scaling applied. Shared by every variant.
  std::vector<float> inv_freq() const;
};

// Rotates x in place. x: [T, H, head_dim]; positions: i32 [T].
void rope(const Context& ctx, Tensor& x, const Tensor& positions, const RopeParams& p);

// One layer of the paged KV cache: k and v are [num_blocks, block_size, n_kv_heads, head_dim] of a float
// type, of ggml's block types (llama.cpp's cache types, CPU only), or of codes (F8E4M3, U8, U4, U2) whose
// scales sit in k_params / v_params: f16 [num_blocks, block_size, n_kv_heads, groups, P] (core/kv_codec.h:
// one group of head_dim / groups elements per scale; P = 1 for fp8, 2 for the integer codes). Empty params:
// the pages need none.
//
// How the codes are taken beyond type and group (SKVQ, docs/kv_cache.md): a head row is grouped in the
// channel order `perm` (i32 [n_kv_heads, head_dim], host; empty: in order), each group's range clipped by
// `clip`, and codes limited to `qmax` (0: the type's largest; 2: ternary values in U2 slots).
//
// KIVI's keys are grouped the other way: token_group > 0 gives each channel of a head a scale and min over
// that many consecutive tokens (slots), in params f16 [num_blocks, block_size / token_group, n_kv_heads,
// head_dim, 2] (integer codes; no perm, clip or qmax). Such pages are written a token group at a time
// (kv_store_block; kv_write gathers them), never a row at a time. Host pages only.
struct KvCoding {
  Tensor perm;
  float clip = 1.f;
  int qmax = 0;
  int token_group = 0;
};

// Windowed formats also keep open blocks in full precision: k_open / v_open [open_blocks, block_size,
// n_kv_heads, head_dim] (a float type: the cache uses f16, as SKVQ does). A block id b >= k.dim(0) in a block table or
// slot names open block b - k.dim(0): attention reads it as it is, and kv_seal encodes a full one into a code block.
struct KvLayer {
  Tensor k;
  Tensor v;
  Tensor k_params;
  Tensor v_params;
  KvCoding k_coding;
  KvCoding v_coding;
  Tensor k_open;
  Tensor v_open;
  int64_t block_size() const { return k.dim(1); }
  bool has_params() const { return !k_params.empty(); }
  int64_t group() const { return has_params() ? k.dim(3) / k_params.dim(3) : 0; }  // elements per scale
  // Code blocks and open blocks: the ids a block table may hold.
  int64_t num_blocks() const { return k.dim(0) + (k_open.empty() ? 0 : k_open.dim(0)); }
};

// Whole rows of a KV page through its format (kv_pages.cpp): one token's keys (values: `v`) of every kv
// head at cache slot `slot`, encoded from or decoded to f32 [n_kv_heads * head_dim]. The reference of
// what the cache writes store and attention reads; host pages only. kv_store refuses a row of per-channel
// code pages (KvCoding::token_group), whose parameters span their token group: kv_store_block writes those.
void kv_store(const KvLayer& c, bool v, int64_t slot, const float* x);
void kv_load(const KvLayer& c, bool v, int64_t slot, float* x);
// One kv head of one token: f32 [head_dim].
void kv_load_head(const KvLayer& c, bool v, int64_t slot, int64_t head, float* x);
// All block_size rows of block `block` (x: f32 [block_size, n_kv_heads * head_dim]), whatever the format.
void kv_store_block(const KvLayer& c, bool v, int64_t block, const float* x);
// The host cache write (the CPU kv_write variants): rows [begin, end) of k and v (f32 [T, n_kv_heads *
// head_dim]) through kv_store at their slots, except keys bound for per-channel code pages;
// kv_write_key_blocks then gathers those over all T rows and encodes them a block at a time. Every row of
// such a block must be in the write: the cache writes a code block directly only when one step holds all of
// it (engine/kv_cache.h).
void kv_write_rows(const KvLayer& c, const float* k, const float* v, const int32_t* slots, int64_t begin, int64_t end);
void kv_write_key_blocks(const KvLayer& c, const float* k, const int32_t* slots, int64_t T);
// Whether a page of type t with these params is a KV format the ops know: params per token and group, or
// with token_group > 0 per channel and token group (KvCoding::token_group).
bool is_kv_page(const Tensor& pages, const Tensor& params, int token_group = 0);

// Seals open blocks: each row of seals (i32 [S, 2]: open block id, code block id; a row with a negative id
// is skipped) has its full open block's K/V encoded into the code block, every layer's blocks by its own
// coding. Runs after a step's cache writes and before its attention reads the code block. Host caches.
void kv_seal(const Context& ctx, const Tensor& seals, KvLayer& cache);

// Writes new keys/values into the cache. k, v: [T, n_kv_heads, head_dim]; slots: i32 [T], slot =
// block_id * block_size + offset_in_block.
void kv_write(const Context& ctx, const Tensor& k, const Tensor& v, const Tensor& slots, KvLayer& cache);

// What happens between a fused q/k/v projection and attention, in one call. qkv: [T, (H + 2 Hkv) * D],
// each row q | k | v. The q and k heads are RMS-normalised over D by q_norm / k_norm when given (f32 [D],
// qk-norm architectures), then rotated at `positions`; q goes to q_out [T, H, D], k and v into the cache
// at `slots` (as kv_write).
struct QkNorm {
  const Tensor* q = nullptr;  // null: no per-head norm
  const Tensor* k = nullptr;
  float eps = 1e-6f;
};
void rope_kv_write(const Context& ctx, const Tensor& qkv, const Tensor& positions, const Tensor& slots,
                   const RopeParams& p, const QkNorm& norm, Tensor& q_out, KvLayer& cache);

// One sequence's share of a batched attention call. Its q_len new tokens are rows
// [q_begin, q_begin + q_len) of q and sit at positions kv_len - q_len ... kv_len - 1; their keys and
// values are already written. Token i attends causally to cache positions [0, kv_len - q_len + i], or with
// a sliding window of W (AttentionBatch::window) to the last W of them: [kv_len - q_len + i - W + 1, ...].
struct AttentionSeq {
  int32_t q_begin = 0;
  int32_t q_len = 0;
  int32_t kv_len = 0;
  const int32_t* block_table = nullptr;  // host pointer on CPU; enough blocks to cover kv_len
};

struct AttentionBatch {
  std::vector<AttentionSeq> seqs;
  float scale = 1.f;  // usually 1/sqrt(head_dim)
  // > 0: each query sees only the `window` most recent positions, itself included (the sliding-window
  // layers of Gemma 3: a key at distance window or more is masked, as in transformers and llama.cpp).
  int32_t window = 0;
  // The first n_decode sequences are decode rows (one generated token each; plan_attention gives them the
  // decode kernel, the rest the prefill kernel); -1: every leading single-token sequence is one.
  int n_decode = -1;
  // Device copies for GPU variants (empty on the CPU): block tables as i32 [n_seqs, max_blocks] (row s
  // padded with -1) and per-sequence {q_begin, q_len, kv_len} as i32 [n_seqs, 3]. The host `seqs` above
  // stay authoritative for planning (grid sizes, split counts).
  Tensor block_tables;
  Tensor seq_info;
};

// out[t, h, :] = softmax(scale * q[t, h] . K^T) V over the causal window, with GQA (query head h reads
// kv head h / (n_heads / n_kv_heads)). q, out: [T, n_heads, head_dim].
void attention(const Context& ctx, const Tensor& q, const KvLayer& cache, const AttentionBatch& batch, Tensor& out);

// A step's attention planned once (FlashInfer's plan/run) and reused by every layer. The batch is split
// by phase into parts that one kernel each runs: the leading run of single-query sequences (decode rows:
// the engine orders them first) and the rest (prefill chunks), so decode rows get the split-KV decode
// kernel with its GQA reuse even in a step that also prefills. Each part holds the variant chosen for it
// and what that variant prepared (split counts, its workspace), owned here: keep the plan alive as long
// as anything recorded over it (a CUDA graph) may run.
struct AttentionPlan {
  struct Part {
    AttentionBatch batch;
    const void* variant = nullptr;  // the dispatcher's choice
    std::string variant_name;
    std::shared_ptr<void> state;
  };
  std::vector<Part> parts;
};
// q: a query tensor of the step's shape (its values are not read); cache: any layer (they share shapes).
AttentionPlan plan_attention(const Context& ctx, const Tensor& q, const KvLayer& cache, const AttentionBatch& batch);
void attention(const Context& ctx, const Tensor& q, const KvLayer& cache, const AttentionPlan& plan, Tensor& out);

// Bidirectional attention without a KV cache (encoders), over the sequences of a batch stacked as rows.
// Sequence s is rows [begin, begin + len); each of its rows attends to every row of the same sequence
// whose key_mask entry is 1 (the tokenizer's attention mask: padding keys are 0), none of the others.
struct EncoderSeq {
  int32_t begin = 0;
  int32_t len = 0;
};
struct EncoderAttentionBatch {
  std::vector<EncoderSeq> seqs;  // host; disjoint row ranges inside [0, T)
  float scale = 1.f;             // usually 1/sqrt(head_dim)
  Tensor key_mask;               // i32 [T] on ctx.device, or empty: every key of a sequence counts
};
// qkv: [T, 3 * H * D], each row q | k | v (a fused projection's output); out: [T, H, D], must not alias
// qkv. A row whose sequence has no unmasked key is written as zeros. Rows outside every sequence are
// left as they are.
void encoder_attention(const Context& ctx, const Tensor& qkv, const EncoderAttentionBatch& batch, Tensor& out);

// ---- sampling ----
// One row's sampling parameters as the kernels read them (a row of i32 words). The pipeline, the same on
// every device: logprobs of the raw logits (when asked) -> penalties -> temperature -> top-k -> top-p ->
// min-p -> one draw. The kept tokens are walked in vocabulary order and the token whose cumulative mass
// first exceeds uniform * total is picked, so the same uniform picks the same token on every device.
struct SampleRow {
  int32_t flags = 0;               // kSampleRow / kSampleLogprobs bits; 0: the row is skipped
  float temperature = 0.f;         // <= 0: greedy (lowest id on ties)
  int32_t top_k = 0;               // <= 0: off
  float top_p = 1.f;               // >= 1: off; keeps the smallest set of most likely tokens with mass >= top_p
  float min_p = 0.f;               // <= 0: off; keeps tokens with p >= min_p * p_max
  float uniform = 0.f;             // the draw in [0, 1)
  float repetition_penalty = 1.f;  // on tokens of the row's entries marked `window`
  float presence_penalty = 0.f;    // minus presence + frequency * count on entries with count > 0
  float frequency_penalty = 0.f;
  int32_t top_logprobs = 0;   // alternatives to report with kSampleLogprobs (at most kMaxTopLogprobs)
  int32_t penalty_begin = 0;  // the row's entries in the penalty list: [begin, end)
  int32_t penalty_end = 0;
  int32_t mask_row = -1;  // >= 0: the row of `masks` naming the tokens allowed (structured output); -1: all
};
inline constexpr int32_t kSampleRow = 1, kSampleLogprobs = 2;
inline constexpr int kMaxTopLogprobs = 20;

// A token a row's penalties touch (each token at most once per row). `raw` receives the logit before
// the penalty, so the sampled token's logprob is of the raw distribution.
struct PenaltyEntry {
  int32_t token = 0;
  int32_t window = 0;  // 1: in the repetition-penalty window
  int32_t count = 0;   // occurrences for the presence/frequency penalties
  float raw = 0.f;     // written by sample()
  float bias = 0.f;    // added after the penalties (a request's logit_bias; -inf forbids the token)
};

// What one row gives back (a row of i32 words).
struct SampleOut {
  int32_t token = -1;
  float logprob = 0.f;  // log-softmax of the raw logits at `token` (kSampleLogprobs)
  int32_t n_top = 0;
  int32_t top_token[kMaxTopLogprobs];
  float top_logprob[kMaxTopLogprobs];  // the most likely raw tokens, most likely first
};

// logits: f32 [R, V] on ctx.device (penalties are applied in place); rows: i32 [R, sizeof(SampleRow)/4];
// penalties: i32 [P, sizeof(PenaltyEntry)/4] (P may be 0); out: i32 [R, sizeof(SampleOut)/4];
// masks: i32 [M, ceil(V/32)] allow-bits (bit t & 31 of word t >> 5), may be empty: a row with mask_row >= 0
// has every token whose bit is clear set to -inf after its penalties (the logprobs stay the raw ones).
void sample(const Context& ctx, Tensor& logits, const Tensor& rows, Tensor& penalties, Tensor& out,
            const Tensor& masks = Tensor{});

// Step inputs that are the previous step's sampled tokens, for asynchronous scheduling (the host plans
// step N+1 before it has read step N's ids): tokens[i] = prev[from[i]].token wherever from[i] >= 0.
// tokens, from: i32 [T]; prev: i32 [R, sizeof(SampleOut)/4], the previous sample() output. A from[i]
// outside prev leaves tokens[i] as it is.
void feed_sampled(const Context& ctx, Tensor& tokens, const Tensor& from, const Tensor& prev);

}  // namespace kestrel::ops
