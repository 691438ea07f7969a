#include "engine/decode_graphs.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"

#if KESTREL_HAVE_CUDA
#include "backends/cuda/graph.h"
#include "backends/cuda/sampling.h"
#endif

namespace kestrel {
namespace {

constexpr int kBuckets[] = {1, 2, 4, 8, 16, 32, 64, 128};

}  // namespace

bool DecodeGraphs::supported(const ops::Context& ctx) {
#if KESTREL_HAVE_CUDA
  return ctx.device == Device::Cuda && ctx.stream != nullptr;
#else
  return false;
#endif
}

int DecodeGraphs::bucket_for(int n) {
  for (int b : kBuckets)
    if (n <= b) return b;
  KS_FAIL("a decode batch of {} sequences is above the largest CUDA-graph bucket ({})", n, kBuckets[7]);
}

#if KESTREL_HAVE_CUDA

namespace cu = backends::cuda;

struct DecodeGraphs::Impl {
  Decoder* model;
  KvCache* cache;
  ops::Context ctx;
  int L;  // rows per input section (the largest bucket)
  int max_kv, max_blocks, bs, pad_block = -1;
  float scale;
  // Device inputs: sections tokens, positions, slots, logit rows ([L] each) and seq_info ([L, 3]) in
  // `small`; block tables [L, max_blocks]. `staging` mirrors both, page-locked.
  Tensor small, tables, logits;
  std::unique_ptr<cu::PinnedBuffer> staging;
  std::vector<int> buckets;
  std::vector<cu::Graph> graphs;
  uint64_t scratch_gen = 0, ws_gen = 0;

  int32_t* host_small() const { return static_cast<int32_t*>(staging->data()); }
  int32_t* host_tables() const { return host_small() + 7 * L; }

  Tensor section(int offset, std::vector<int64_t> shape) const {
    Tensor t = small;
    t.data = small.ptr<int32_t>() + offset;
    t.shape = std::move(shape);
    return t;
  }

  void set_pad_row(int i) {
    int32_t* h = host_small();
    h[i] = 0;
    h[L + i] = 0;
    h[2 * L + i] = pad_block * bs;
    h[4 * L + 3 * i + 0] = i;
    h[4 * L + 3 * i + 1] = 1;
    h[4 * L + 3 * i + 2] = 1;
    host_tables()[static_cast<size_t>(i) * max_blocks] = pad_block;
  }

  // Enqueues the forward of bucket b over the static buffers (eager or under capture).
  void run_bucket(int b) {
    ops::AttentionBatch ab;
    ab.scale = scale;
    // Planned for the longest sequence the graph may see; the kernels read the real lengths on the device.
    for (int i = 0; i < b; ++i) ab.seqs.push_back({i, 1, max_kv, nullptr});
    ab.block_tables = tables;
    ab.block_tables.shape = {b, max_blocks};
    ab.seq_info = section(4 * L, {b, 3});
    Tensor lg = logits;
    lg.shape = {b, logits.dim(1)};
    model->forward_device(ctx, section(0, {b}), section(L, {b}), section(2 * L, {b}), ab, section(3 * L, {b}),
                          cache->layers(), lg);
  }

  void capture_all() {
    model->reserve(ctx, L);
    graphs.clear();
    // Eager warm-up first: it sizes the attention workspace and builds the GEMM plans, so nothing a
    // graph points at moves afterwards.
    for (int b : buckets) run_bucket(b);
    cu::synchronize(ctx.stream);
    scratch_gen = model->scratch_generation();
    ws_gen = cu::attention_workspace_generation();
    for (int b : buckets) graphs.push_back(cu::Graph::capture(ctx.stream, [&] { run_bucket(b); }));
    KS_CHECK(ws_gen == cu::attention_workspace_generation() && scratch_gen == model->scratch_generation(),
             "internal error: a buffer moved while capturing the decode graphs");
  }
};

DecodeGraphs::DecodeGraphs(Decoder& model, KvCache& cache, const ops::Context& ctx, int max_batch, int max_kv_len)
    : impl_(std::make_unique<Impl>()) {
  KS_CHECK(supported(ctx), "decode graphs need a CUDA context with a stream");
  KS_CHECK(model.device() == Device::Cuda, "decode graphs need the model's weights on the GPU (place_on)");
  KS_CHECK(max_batch >= 1 && max_kv_len >= 1, "decode graphs: bad sizes (batch {}, kv {})", max_batch, max_kv_len);
  max_batch_ = bucket_for(max_batch);
  max_kv_len_ = max_kv_len;
  Impl& m = *impl_;
  m.model = &model;
  m.cache = &cache;
  m.ctx = ctx;
  m.L = max_batch_;
  m.bs = cache.block_size();
  m.max_kv = max_kv_len;
  m.max_blocks = (max_kv_len + m.bs - 1) / m.bs;
  m.scale = 1.f / std::sqrt(static_cast<float>(model.config().head_dim));
  for (int b : kBuckets)
    if (b <= max_batch_) m.buckets.push_back(b);
  const auto pad = cache.blocks().allocate();
  KS_CHECK(pad.has_value(), "decode graphs need one free KV block for padding rows");
  m.pad_block = *pad;
  try {
    m.small = ops::allocate(ctx, DType::I32, {7 * m.L});
    m.tables = ops::allocate(ctx, DType::I32, {m.L, m.max_blocks});
    m.logits = ops::allocate(ctx, DType::F32, {m.L, model.config().vocab});
    m.staging = std::make_unique<cu::PinnedBuffer>((7 * size_t(m.L) + size_t(m.L) * m.max_blocks) * sizeof(int32_t));
    std::fill_n(m.host_tables(), size_t(m.L) * m.max_blocks, -1);
    for (int i = 0; i < m.L; ++i) {
      m.host_small()[3 * m.L + i] = i;  // logit rows: every row, in order
      m.set_pad_row(i);
    }
    cu::copy_async(m.small.data, m.host_small(), m.small.nbytes(), ctx.stream);
    cu::copy_async(m.tables.data, m.host_tables(), m.tables.nbytes(), ctx.stream);
    m.capture_all();
  } catch (...) {
    cache.blocks().release(m.pad_block);
    throw;
  }
}

DecodeGraphs::~DecodeGraphs() {
  cu::synchronize(impl_->ctx.stream);
  impl_->cache->blocks().release(impl_->pad_block);
}

Tensor DecodeGraphs::step(std::span<const SeqWork> work) {
  Impl& m = *impl_;
  const int n = static_cast<int>(work.size());
  KS_CHECK(n >= 1 && n <= max_batch_, "decode step of {} sequences; the graphs hold 1 to {}", n, max_batch_);
  const int b = bucket_for(n);
  const int vocab = m.model->config().vocab;
  // The previous step's uploads read the staging buffer; wait for them before rewriting it.
  cu::synchronize(m.ctx.stream);
  int32_t* h = m.host_small();
  for (int i = 0; i < n; ++i) {
    const SeqWork& w = work[i];
    KS_CHECK(w.tokens.size() == 1, "a decode step feeds one token per sequence, got {}", w.tokens.size());
    KS_CHECK(w.tokens[0] >= 0 && w.tokens[0] < vocab, "token id {} is outside the vocabulary (size {})", w.tokens[0],
             vocab);
    const int32_t len = w.kv->length();
    KS_CHECK(len + 1 <= m.max_kv && len + 1 <= w.kv->capacity(*m.cache),
             "sequence {} needs {} KV positions; the graphs hold {} and its blocks {}", i, len + 1, m.max_kv,
             w.kv->capacity(*m.cache));
    h[i] = w.tokens[0];
    h[m.L + i] = len;
    h[2 * m.L + i] = w.kv->slot(*m.cache, len);
    h[4 * m.L + 3 * i + 0] = i;
    h[4 * m.L + 3 * i + 1] = 1;
    h[4 * m.L + 3 * i + 2] = len + 1;
    const int used = len / m.bs + 1;
    std::copy_n(w.kv->block_table().data(), used, m.host_tables() + static_cast<size_t>(i) * m.max_blocks);
  }
  for (int i = n; i < b; ++i) m.set_pad_row(i);
  cu::copy_async(m.small.data, h, m.small.nbytes(), m.ctx.stream);
  cu::copy_async(m.tables.data, m.host_tables(), static_cast<size_t>(b) * m.max_blocks * sizeof(int32_t), m.ctx.stream);
  if (m.scratch_gen != m.model->scratch_generation() || m.ws_gen != cu::attention_workspace_generation())
    m.capture_all();  // someone grew a buffer the graphs point into
  const size_t idx = std::find(m.buckets.begin(), m.buckets.end(), b) - m.buckets.begin();
  m.graphs.at(idx).launch(m.ctx.stream);
  Tensor out = m.logits;
  out.shape = {n, vocab};
  return out;
}

std::vector<int32_t> sample_on_device(const ops::Context& ctx, const Tensor& logits, const SamplingParams& p,
                                      uint64_t step) {
  KS_CHECK(ctx.device == Device::Cuda, "GPU sampling needs a CUDA context");
  cu::SamplingParams sp;
  sp.temperature = p.temperature;
  sp.top_k = p.top_k;
  sp.top_p = p.top_p;
  sp.min_p = p.min_p;
  std::vector<cu::SamplingParams> rows(logits.dim(0), sp);
  for (size_t r = 0; r < rows.size(); ++r) rows[r].seed = p.seed * 0x9e3779b97f4a7c15ull + step * 1024 + r;
  return cu::sample(logits, rows, ctx.stream);
}

#else  // no CUDA backend in this build

struct DecodeGraphs::Impl {};

DecodeGraphs::DecodeGraphs(Decoder&, KvCache&, const ops::Context&, int, int) {
  KS_FAIL("decode graphs need the CUDA backend, which this build of Kestrel does not have");
}

DecodeGraphs::~DecodeGraphs() = default;

Tensor DecodeGraphs::step(std::span<const SeqWork>) {
  KS_FAIL("decode graphs need the CUDA backend, which this build of Kestrel does not have");
}

std::vector<int32_t> sample_on_device(const ops::Context&, const Tensor&, const SamplingParams&, uint64_t) {
  KS_FAIL("GPU sampling needs the CUDA backend, which this build of Kestrel does not have");
}

#endif

}  // namespace kestrel
