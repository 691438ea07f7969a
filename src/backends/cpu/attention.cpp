// Attention over the paged KV cache with an online softmax. Work is cut into items of (query token,
// kv head, kv range): one item serves all query heads of a GQA group so each K/V row is read once per
// group, and long contexts are split into kv chunks of a fixed size (flash-decoding) so that even
// batch-1 decode keeps every thread busy. Split rows are merged from their partial (max, sum, output)
// afterwards. The split depends on the row's own context length only, never on the rest of the batch or
// the thread count, and tiles follow absolute positions, not blocks, so a query's result is the same bits
// whatever it is batched with, however its prompt was chunked and whatever the cache's block size.
// Quantized pages (fp8, int8, int4, int2, SKVQ, KIVI and llama.cpp's types) are decoded by the reference codec
// (ops::kv_load_head) and then read as f32: a tile at a time, once per GQA group, for decode rows; once per
// position for a prefill sequence (all its query rows share them).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "backends/cpu/fast_ops.h"
#include "core/error.h"
#include "core/thread_pool.h"

namespace kestrel::backends::cpu {
namespace {

constexpr int64_t kTile = 32;    // positions scored before each softmax rescale
constexpr int64_t kChunk = 256;  // kv positions per item
constexpr int64_t kMinParallelMacs = 1 << 15;
static_assert(kChunk % kTile == 0, "a chunk starts a tile, so splitting a row moves no tile boundary");

struct Row {  // one (query token, kv head) pair
  int64_t t;
  int32_t kvh;
  int32_t seq;
  int32_t first;  // positions [first, n_ctx) are attended (first > 0 under a sliding window)
  int32_t n_ctx;
  int32_t n_chunks;
  int64_t partial;  // index of its first partial slot when split, else -1
};

struct Item {
  int32_t row;
  int32_t chunk;
  int32_t begin, end;
};

struct Geometry {
  int64_t H, D, Hkv, G, bs;
  size_t k_row_bytes, v_row_bytes;  // one position's K (V) of one kv head
};

// Whether the SIMD kernels read these pages directly (else tiles are decoded to f32 first).
bool direct(const Kernels& k, const Tensor& pages, const Tensor& params) {
  return params.empty() && k.kv_dot[static_cast<size_t>(pages.dtype)] && k.kv_axpy[static_cast<size_t>(pages.dtype)];
}

// Accumulates softmax(scale * q . K) V for the G heads of kv head `kvh` over positions [begin, end)
// into o (G x D, unnormalised) with running max m and sum l. tile: 2 * kTile * D floats for decoded pages.
// A prefill sequence's K and V of pages the kernels cannot read directly, decoded once for all its query
// rows (each row would otherwise decode every tile again): [kv_len, Hkv, D] each; empty when not decoded.
struct Decoded {
  std::vector<float> k, v;
};

void attend(const Kernels& k, const ops::AttentionArgs& a, const Geometry& g, const Row& row, int32_t begin,
            int32_t end, float* o, float* m, float* l, float* scores, float* tile, const Decoded& decoded) {
  const ops::AttentionSeq& s = a.batch.seqs[row.seq];
  const bool k_direct = direct(k, a.cache.k, a.cache.k_params), v_direct = direct(k, a.cache.v, a.cache.v_params);
  const bool pre = !decoded.k.empty();
  const KvDotFn dot = k.kv_dot[static_cast<size_t>(k_direct ? a.cache.k.dtype : DType::F32)];
  const KvAxpyFn axpy = k.kv_axpy[static_cast<size_t>(v_direct ? a.cache.v.dtype : DType::F32)];
  const float* q = a.q.ptr<float>() + (row.t * g.H + row.kvh * g.G) * g.D;
  std::fill(o, o + g.G * g.D, 0.f);
  std::fill(m, m + g.G, -std::numeric_limits<float>::infinity());
  std::fill(l, l + g.G, 0.f);
  const char* kc = static_cast<const char*>(a.cache.k.data);
  const char* vc = static_cast<const char*>(a.cache.v.data);
  const char* krow[kTile];
  const char* vrow[kTile];
  for (int32_t p = begin; p < end;) {
    // Tiles end at multiples of kTile positions, whatever the block size, so the softmax rescales (and
    // their rounding) fall in the same places for every block size, chunking and batch.
    const int64_t n = std::min<int64_t>(end - p, kTile - p % kTile);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t slot = static_cast<int64_t>(s.block_table[(p + j) / g.bs]) * g.bs + (p + j) % g.bs;
      krow[j] = kc + (slot * g.Hkv + row.kvh) * g.k_row_bytes;
      vrow[j] = vc + (slot * g.Hkv + row.kvh) * g.v_row_bytes;
      if (pre) {
        const int64_t at = ((p + j) * g.Hkv + row.kvh) * g.D;
        if (!k_direct) krow[j] = reinterpret_cast<const char*>(decoded.k.data() + at);
        if (!v_direct) vrow[j] = reinterpret_cast<const char*>(decoded.v.data() + at);
        continue;
      }
      if (!k_direct) {
        ops::kv_load_head(a.cache, false, slot, row.kvh, tile + j * g.D);
        krow[j] = reinterpret_cast<const char*>(tile + j * g.D);
      }
      if (!v_direct) {
        ops::kv_load_head(a.cache, true, slot, row.kvh, tile + (kTile + j) * g.D);
        vrow[j] = reinterpret_cast<const char*>(tile + (kTile + j) * g.D);
      }
    }
    for (int64_t h = 0; h < g.G; ++h) {
      float* sc = scores + h * kTile;
      float mt = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < n; ++j) {
        sc[j] = dot(q + h * g.D, krow[j], g.D) * a.batch.scale;
        mt = std::max(mt, sc[j]);
      }
      const float m_new = std::max(m[h], mt);
      if (m_new > m[h]) {
        const float corr = std::exp(m[h] - m_new);  // 0 on the first tile
        for (int64_t d = 0; d < g.D; ++d) o[h * g.D + d] *= corr;
        l[h] *= corr;
        m[h] = m_new;
      }
      l[h] += k.exp_sum(sc, m_new, n);
      for (int64_t j = 0; j < n; ++j) axpy(sc[j], vrow[j], o + h * g.D, g.D);
    }
    p += static_cast<int32_t>(n);
  }
}

void validate(const ops::AttentionArgs& a) {
  const Tensor &q = a.q, &kc = a.cache.k, &vc = a.cache.v;
  KS_CHECK(q.ndim() == 3 && kc.ndim() == 4 && vc.shape == kc.shape && q.dim(2) == kc.dim(3) && kc.dim(2) > 0 &&
               q.dim(1) % kc.dim(2) == 0 && a.out.numel() == q.numel(),
           "attention shape mismatch: q {} cache k {} v {} out {}", q.describe(), kc.describe(), vc.describe(),
           a.out.describe());
  const int64_t T = q.dim(0), n_blocks = a.cache.num_blocks(), bs = kc.dim(1);
  for (const ops::AttentionSeq& s : a.batch.seqs) {
    KS_CHECK(s.q_begin >= 0 && s.q_len >= 0 && s.q_begin + s.q_len <= T && s.q_len <= s.kv_len,
             "attention sequence (q_begin {}, q_len {}, kv_len {}) does not fit {} query rows", s.q_begin, s.q_len,
             s.kv_len, T);
    if (s.q_len == 0) continue;
    KS_CHECK(s.block_table != nullptr, "attention sequence with kv_len {} has no block table", s.kv_len);
    for (int64_t b = 0; b < (s.kv_len + bs - 1) / bs; ++b)
      KS_CHECK(s.block_table[b] >= 0 && s.block_table[b] < n_blocks, "kv block {} outside the cache of {} blocks",
               s.block_table[b], n_blocks);
  }
}

}  // namespace

bool attention_supports(const Kernels& k, const ops::AttentionArgs& a, std::string* why) {
  if (!k.available()) {
    if (why) *why = std::string("this CPU lacks the ") + k.name + " instructions";
    return false;
  }
  if (!all_f32({&a.q, &a.out}, why)) return false;
  if (!ops::is_kv_page(a.cache.k, a.cache.k_params, a.cache.k_coding.token_group) ||
      !ops::is_kv_page(a.cache.v, a.cache.v_params, a.cache.v_coding.token_group)) {
    if (why) *why = "cache pages of " + a.cache.k.describe() + " are not a KV cache format";
    return false;
  }
  return true;
}

void attention(const Kernels& k, const ops::AttentionArgs& a, const ops::Context& ctx) {
  validate(a);
  Geometry g;
  g.H = a.q.dim(1);
  g.D = a.q.dim(2);
  g.Hkv = a.cache.k.dim(2);
  g.G = g.H / g.Hkv;
  g.bs = a.cache.block_size();
  g.k_row_bytes = row_bytes(a.cache.k.dtype, g.D);
  g.v_row_bytes = row_bytes(a.cache.v.dtype, g.D);

  std::vector<Row> rows;
  int64_t total = 0;
  for (int32_t si = 0; si < static_cast<int32_t>(a.batch.seqs.size()); ++si) {
    const ops::AttentionSeq& s = a.batch.seqs[si];
    for (int32_t i = 0; i < s.q_len; ++i)
      for (int32_t h = 0; h < g.Hkv; ++h) {
        const int32_t n_ctx = s.kv_len - s.q_len + i + 1;
        const int32_t first = a.batch.window > 0 ? std::max(0, n_ctx - a.batch.window) : 0;
        rows.push_back({s.q_begin + i, h, si, first, n_ctx, 1, -1});
        total += n_ctx - first;
      }
  }
  ThreadPool& pool = ctx.threads();
  const bool parallel = pool.size() > 1 && total * g.H * g.D >= kMinParallelMacs;
  const int64_t chunk = kChunk;

  std::vector<Item> items;
  int64_t n_partials = 0;
  for (int32_t r = 0; r < static_cast<int32_t>(rows.size()); ++r) {
    Row& row = rows[r];
    // Chunks stay on absolute multiples of kChunk under a window too: the first one starts mid-chunk.
    const int64_t c0 = row.first / chunk;
    row.n_chunks = static_cast<int32_t>((row.n_ctx + chunk - 1) / chunk - c0);
    if (row.n_chunks > 1) row.partial = n_partials, n_partials += row.n_chunks;
    for (int32_t c = 0; c < row.n_chunks; ++c)
      items.push_back({r, c, static_cast<int32_t>(std::max<int64_t>(row.first, (c0 + c) * chunk)),
                       static_cast<int32_t>(std::min<int64_t>(row.n_ctx, (c0 + c + 1) * chunk))});
  }
  // Prefill sequences over pages decoded on the fly: decode each position once, in parallel, within a
  // memory budget (a decode row has nothing to share: its group reads each position once anyway).
  std::vector<Decoded> decoded(a.batch.seqs.size());
  if (!direct(k, a.cache.k, a.cache.k_params) || !direct(k, a.cache.v, a.cache.v_params)) {
    constexpr int64_t kBudgetFloats = int64_t{1} << 28;  // 1 GiB of f32
    int64_t used = 0;
    for (size_t si = 0; si < a.batch.seqs.size(); ++si) {
      const ops::AttentionSeq& s = a.batch.seqs[si];
      const int64_t n = int64_t{s.kv_len} * g.Hkv * g.D;
      if (s.q_len < 2 || used + 2 * n > kBudgetFloats) continue;
      used += 2 * n;
      Decoded& d = decoded[si];
      d.k.resize(static_cast<size_t>(n));
      d.v.resize(static_cast<size_t>(n));
      auto decode = [&](int tid, int nt) {
        for (int32_t p = tid; p < s.kv_len; p += nt) {
          const int64_t slot = static_cast<int64_t>(s.block_table[p / g.bs]) * g.bs + p % g.bs;
          ops::kv_load(a.cache, false, slot, d.k.data() + int64_t{p} * g.Hkv * g.D);
          ops::kv_load(a.cache, true, slot, d.v.data() + int64_t{p} * g.Hkv * g.D);
        }
      };
      if (parallel)
        pool.run(decode);
      else
        decode(0, 1);
    }
  }

  // Partial slot layout: G maxima, G sums, G x D outputs.
  const int64_t slot_floats = g.G * (g.D + 2);
  std::vector<float> partials(static_cast<size_t>(n_partials * slot_floats));

  std::atomic<size_t> next{0};
  auto work = [&](int, int) {
    std::vector<float> scratch(static_cast<size_t>(slot_floats + g.G * kTile + 2 * kTile * g.D));
    for (size_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < items.size();) {
      const Item& it = items[i];
      const Row& row = rows[it.row];
      float* slot = row.partial >= 0 ? partials.data() + (row.partial + it.chunk) * slot_floats : scratch.data();
      float *m = slot, *l = slot + g.G, *o = slot + 2 * g.G;
      attend(k, a, g, row, it.begin, it.end, o, m, l, scratch.data() + slot_floats,
             scratch.data() + slot_floats + g.G * kTile, decoded[row.seq]);
      if (row.partial >= 0) continue;
      float* out = a.out.ptr<float>() + (row.t * g.H + row.kvh * g.G) * g.D;
      for (int64_t h = 0; h < g.G; ++h)
        for (int64_t d = 0; d < g.D; ++d) out[h * g.D + d] = o[h * g.D + d] / l[h];
    }
  };
  if (parallel)
    pool.run(work);
  else
    work(0, 1);
  if (n_partials == 0) return;

  for (const Row& row : rows) {
    if (row.partial < 0) continue;
    float* out = a.out.ptr<float>() + (row.t * g.H + row.kvh * g.G) * g.D;
    for (int64_t h = 0; h < g.G; ++h) {
      float m_all = -std::numeric_limits<float>::infinity();
      for (int32_t c = 0; c < row.n_chunks; ++c) m_all = std::max(m_all, partials[(row.partial + c) * slot_floats + h]);
      float l_all = 0;
      std::fill(out + h * g.D, out + (h + 1) * g.D, 0.f);
      for (int32_t c = 0; c < row.n_chunks; ++c) {
        const float* slot = partials.data() + (row.partial + c) * slot_floats;
        const float w = std::exp(slot[h] - m_all);
        l_all += w * slot[g.G + h];
        for (int64_t d = 0; d < g.D; ++d) out[h * g.D + d] += w * slot[2 * g.G + h * g.D + d];
      }
      for (int64_t d = 0; d < g.D; ++d) out[h * g.D + d] /= l_all;
    }
  }
}

}  // namespace kestrel::backends::cpu
