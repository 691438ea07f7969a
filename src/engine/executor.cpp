#include "engine/executor.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>

#include "backends/backends.h"
#include "core/error.h"
#include "core/log.h"

namespace kestrel {
namespace {

constexpr int kRowWords = sizeof(ops::SampleRow) / 4;
constexpr int kOutWords = sizeof(ops::SampleOut) / 4;
constexpr int kEntryWords = sizeof(ops::PenaltyEntry) / 4;

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

std::string row_error_text(unsigned flags) {
  std::string s;
  if (flags & ops::kRowErrTokenId) s = "a token id was outside the vocabulary";
  if (flags & ops::kRowErrKvSlot) s += std::string(s.empty() ? "" : "; ") + "a KV-cache slot was outside the cache";
  return s.empty() ? "a kernel rejected its inputs" : s;
}

}  // namespace

std::vector<int> Executor::buckets(int max_seqs) {
  std::vector<int> b;
  for (int n : {1, 2, 4, 8, 16, 24, 32}) b.push_back(n);
  for (int n = 48; n <= 128; n += 16) b.push_back(n);
  for (int n = 160; n <= 1024; n += 32) b.push_back(n);
  while (b.size() > 1 && b[b.size() - 2] >= max_seqs) b.pop_back();  // the last bucket covers max_seqs
  if (b.back() < max_seqs) b.push_back(max_seqs);
  return b;
}

// The staging layout, in i32 words, with fixed offsets so recorded graphs can keep pointing at them:
// one host buffer (page-locked on CUDA) and its device mirror, copied with one async copy per step.
//   tokens[T] positions[T] slots[T] logit_rows[T] seq_info[S*3] sample_rows[T*kRowWords] tables[S*W]
//   penalties[P*kEntryWords]
// and, coming back, sample outputs [T*kOutWords] and the lane's row-error words [T].
struct Executor::Impl {
  Decoder* model;
  KvCache* cache;
  ops::Runtime* lane;
  int T, S, W, bs, vocab;
  int P = 0;  // penalty entry capacity (grows)
  int pad_block = -1;
  size_t off_pos, off_slots, off_rows, off_info, off_sample, off_tables, off_pen, words;
  std::unique_ptr<ops::HostBuffer> host_in, host_out, host_err;
  Tensor dev_in, dev_out, logits;
  Decoder::Scratch scratch;  // this executor's activations (its lane's own)
  uint64_t buffers_gen = 0;  // bumped when dev_in or logits move

  struct Recorded {
    ops::AttentionPlan plan;
    std::unique_ptr<ops::Graph> graph;
  };
  std::map<int, Recorded> graphs;  // by bucket
  uint64_t graphs_key[2] = {~0ull, ~0ull};

  int32_t* hin() const { return static_cast<int32_t*>(host_in->data()); }
  Tensor section(size_t offset, std::vector<int64_t> shape) const {
    Tensor t = dev_in;
    t.dtype = DType::I32;
    t.data = dev_in.ptr<int32_t>() + offset;
    t.shape = std::move(shape);
    return t;
  }
  ops::SampleRow* host_sample_rows() const { return reinterpret_cast<ops::SampleRow*>(hin() + off_sample); }

  void layout() {
    off_pos = T;
    off_slots = 2 * size_t(T);
    off_rows = 3 * size_t(T);
    off_info = 4 * size_t(T);
    off_sample = off_info + 3 * size_t(S);
    off_tables = off_sample + size_t(T) * kRowWords;
    off_pen = off_tables + size_t(S) * W;
    words = off_pen + size_t(P) * kEntryWords;
  }

  void allocate_inputs(const ops::Context& ctx) {
    layout();
    host_in = lane->host_buffer(words * 4);
    dev_in = ops::allocate(ctx, DType::I32, {static_cast<int64_t>(words)});
    std::memset(host_in->data(), 0, words * 4);
    ++buffers_gen;
  }

  void ensure_logit_rows(const ops::Context& ctx, int64_t R) {
    if (!logits.empty() && logits.dim(0) >= R) return;
    logits = ops::allocate(ctx, DType::F32, {std::max<int64_t>(R, S), vocab});
    ++buffers_gen;
  }

  // Sequence i of the staged step is a padding row: one token at position 0 written to the reserved block.
  void stage_pad_row(int i) {
    int32_t* h = hin();
    h[i] = 0;
    h[off_pos + i] = 0;
    h[off_slots + i] = pad_block * bs;
    h[off_rows + i] = i;
    h[off_info + 3 * i + 0] = i;
    h[off_info + 3 * i + 1] = 1;
    h[off_info + 3 * i + 2] = 1;
    host_sample_rows()[i] = ops::SampleRow{};
    int32_t* table = h + off_tables + size_t(i) * W;
    table[0] = pad_block;
    std::fill(table + 1, table + W, -1);
  }

  // Copies the staged words [0, off_tables + seqs * W) and the used penalty entries.
  void upload(int seqs, int entries) {
    const size_t head = off_tables + size_t(seqs) * W;
    lane->copy_async(dev_in.data, hin(), head * 4);
    if (entries > 0)
      lane->copy_async(dev_in.ptr<int32_t>() + off_pen, hin() + off_pen, size_t(entries) * kEntryWords * 4);
  }

  ops::AttentionBatch attention_batch(const std::vector<ops::AttentionSeq>& seqs, float scale) const {
    ops::AttentionBatch ab;
    ab.scale = scale;
    ab.seqs = seqs;
    const auto n = static_cast<int64_t>(seqs.size());
    ab.block_tables = section(off_tables, {n, W});
    ab.seq_info = section(off_info, {n, 3});
    return ab;
  }

  // Enqueues the step's work on the lane: forward, the raw logits to `host_logits` (when given, before the
  // penalties change them), sampling, and the copies back of the sample outputs and row-error words (which
  // it clears). Eager, or recorded into a graph.
  void enqueue(const ops::Context& ctx, int t, int r, const ops::AttentionPlan& plan, Tensor* host_logits = nullptr) {
    StepInputs in;
    in.tokens = section(0, {t});
    in.positions = section(off_pos, {t});
    in.slots = section(off_slots, {t});
    in.logit_rows = section(off_rows, {r});
    in.attention = &plan;
    Tensor lg = logits.slice_rows(0, r);
    model->forward(ctx, in, cache->layers(), scratch, lg);
    if (host_logits) lane->copy_async(host_logits->data, lg.data, lg.nbytes());
    Tensor rows = section(off_sample, {r, kRowWords});
    Tensor pen = P > 0 ? section(off_pen, {P, kEntryWords}) : Tensor{};
    Tensor out = dev_out.slice_rows(0, r);
    ops::sample(ctx, lg, rows, pen, out);
    lane->copy_async(host_out->data(), out.data, size_t(r) * kOutWords * 4);
    const ops::ErrorRows err = lane->error_rows(T);
    lane->copy_async(host_err->data(), err.words, size_t(t) * 4);
    lane->fill_async(err.words, 0, size_t(t) * 4);
  }
};

Executor::Executor(Decoder& model, KvCache& cache, ops::Context ctx, const ExecutorOptions& opt)
    : impl_(std::make_unique<Impl>()), ctx_(std::move(ctx)), opt_(opt) {
  KS_CHECK(opt.max_step_tokens >= 1 && opt.max_seqs >= 1 && opt.max_kv_len >= 1,
           "executor limits must be positive (step tokens {}, sequences {}, KV length {})", opt.max_step_tokens,
           opt.max_seqs, opt.max_kv_len);
  KS_CHECK(model.device() == ctx_.device, "the model's weights are not on the executor's device; place them first");
  if (!ctx_.runtime) ctx_.runtime = backends::default_runtime(ctx_.device);
  opt_.max_seqs = std::min(opt_.max_seqs, opt_.max_step_tokens);
  Impl& m = *impl_;
  m.model = &model;
  m.cache = &cache;
  m.lane = ctx_.runtime.get();
  m.T = opt_.max_step_tokens;
  m.S = opt_.max_seqs;
  m.bs = cache.block_size();
  m.W = (opt_.max_kv_len + m.bs - 1) / m.bs;
  m.vocab = static_cast<int>(model.config().vocab);
  m.P = 16 * m.S;
  m.scratch = model.make_scratch(ctx_, m.T);
  m.allocate_inputs(ctx_);
  m.dev_out = ops::allocate(ctx_, DType::I32, {m.T, kOutWords});
  m.host_out = m.lane->host_buffer(size_t(m.T) * kOutWords * 4);
  m.host_err = m.lane->host_buffer(size_t(m.T) * 4);
  m.lane->error_rows(m.T);
  m.ensure_logit_rows(ctx_, m.S);
  if (graphs_enabled()) {
    const auto pad = cache.blocks().allocate();
    KS_CHECK(pad.has_value(), "the executor needs one free KV block for the padding rows of its graphs");
    m.pad_block = *pad;
  }
}

Executor::~Executor() {
  try {
    impl_->lane->synchronize();
  } catch (...) {
  }
  impl_->graphs.clear();
  if (impl_->pad_block >= 0) impl_->cache->blocks().release(impl_->pad_block);
}

bool Executor::graphs_enabled() const {
  return opt_.graphs && ctx_.runtime->graphs_supported();
}

void Executor::capture_graphs() {
  if (!graphs_enabled()) return;
  Impl& m = *impl_;
  const float scale = 1.f / std::sqrt(static_cast<float>(m.model->config().head_dim));
  const uint64_t key[2] = {m.lane->generation(), m.buffers_gen};
  if (!std::equal(key, key + 2, m.graphs_key)) {
    m.graphs.clear();
    std::copy(key, key + 2, m.graphs_key);
  }
  for (int b : buckets(m.S)) {
    if (m.graphs.count(b)) continue;
    // Padding rows staged and run once eagerly first: the lane's lazily made state (library handles,
    // their plans) exists before recording, and nothing the graph points at moves afterwards.
    for (int i = 0; i < b; ++i) m.stage_pad_row(i);
    m.upload(b, 0);
    std::vector<ops::AttentionSeq> seqs;
    for (int i = 0; i < b; ++i) seqs.push_back({i, 1, m.W * m.bs, nullptr});
    // Planned for the longest sequence the graph may see; the kernels read the real lengths on the device.
    Impl::Recorded rec;
    rec.plan = m.model->plan_attention(ctx_, m.attention_batch(seqs, scale), m.cache->layers(), m.scratch);
    m.enqueue(ctx_, b, b, rec.plan);
    m.lane->synchronize();
    rec.graph = m.lane->capture([&] { m.enqueue(ctx_, b, b, rec.plan); });
    m.graphs.emplace(b, std::move(rec));
  }
  KS_CHECK(key[0] == m.lane->generation() && key[1] == m.buffers_gen,
           "internal error: a buffer moved while recording the decode graphs");
}

StepResult Executor::run(std::span<const StepSeq> in) {
  const auto t0 = std::chrono::steady_clock::now();
  Impl& m = *impl_;
  const int n = static_cast<int>(in.size());
  KS_CHECK(n >= 1, "a step with no sequences");
  KS_CHECK(n <= m.S, "a step of {} sequences; the executor holds {}", n, m.S);

  // The step's shape is the caller's contract (a violation throws and nothing runs); what a sequence
  // carries (token ids, its block table) is checked per sequence: a bad one fails alone and is left out.
  std::vector<std::string> failed(n);
  int64_t total = 0;
  for (int i = 0; i < n; ++i) {
    const StepSeq& s = in[i];
    KS_CHECK(s.kv != nullptr && !s.tokens.empty(), "a sequence in the step has no new tokens");
    const int64_t len = s.kv->length(), need = len + static_cast<int64_t>(s.tokens.size());
    KS_CHECK(need <= s.kv->capacity(*m.cache), "sequence needs {} KV positions but has blocks for {}", need,
             s.kv->capacity(*m.cache));
    KS_CHECK(need <= int64_t{m.W} * m.bs, "sequence needs {} KV positions; the executor was sized for {}", need,
             int64_t{m.W} * m.bs);
    KS_CHECK(s.top_logprobs <= ops::kMaxTopLogprobs, "at most {} top logprobs, got {}", ops::kMaxTopLogprobs,
             s.top_logprobs);
    if (s.sampling) s.sampling->validate();
    total += static_cast<int64_t>(s.tokens.size());
    for (int32_t t : s.tokens)
      if (t < 0 || t >= m.vocab) failed[i] = fmt::format("token id {} is outside the vocabulary (size {})", t, m.vocab);
    const int32_t blocks = m.cache->blocks().num_total();
    for (size_t b = 0; b < static_cast<size_t>((need + m.bs - 1) / m.bs); ++b)
      if (s.kv->block_table()[b] < 0 || s.kv->block_table()[b] >= blocks)
        failed[i] =
            fmt::format("KV block {} of the sequence is outside the cache ({} blocks)", s.kv->block_table()[b], blocks);
    if (s.sampling)
      for (int32_t t : s.history)
        if (t < 0 || t >= m.vocab) failed[i] = fmt::format("penalty history token {} is outside the vocabulary", t);
  }
  KS_CHECK(total <= m.T, "a step of {} tokens; the executor holds {}", total, m.T);

  // The sequences that run, decode rows first (stable), so the attention plan gives them the decode kernel.
  std::vector<int> order;
  bool host_logits = false, all_single = true;
  int64_t active_tokens = 0;
  for (int i = 0; i < n; ++i) {
    if (!failed[i].empty()) continue;
    order.push_back(i);
    active_tokens += static_cast<int64_t>(in[i].tokens.size());
    host_logits |= in[i].logits != LogitRows::None;
    all_single &= in[i].tokens.size() == 1;
  }
  std::stable_partition(order.begin(), order.end(), [&](int i) { return in[i].tokens.size() == 1; });
  const int n_run = static_cast<int>(order.size());
  const int T = static_cast<int>(active_tokens);
  StepResult res;
  Tensor all_logits;  // [R, vocab] on the host, when some sequence asked for logits
  res.seqs.resize(n);
  for (int i = 0; i < n; ++i) res.seqs[i].error = failed[i];
  if (n_run == 0) {
    res.ms = ms_since(t0);
    return res;
  }
  // Sampling rows and penalty entries first: the entries may outgrow the staging buffers.
  std::vector<ops::PenaltyEntry> entries;
  std::vector<ops::SampleRow> srows(n_run);
  for (int k = 0; k < n_run; ++k) {
    const StepSeq& s = in[order[k]];
    if (!s.sampling) continue;
    srows[k] = sample_row(*s.sampling, s.draw, s.top_logprobs);
    add_penalties(*s.sampling, s.history, srows[k], entries);
  }
  if (static_cast<int>(entries.size()) > m.P) {  // grow the staging buffers (graphs are recorded again)
    m.P = std::max<int>(static_cast<int>(entries.size()), 2 * m.P);
    m.allocate_inputs(ctx_);
  }

  // A step of single-token rows that wants no logits on the host replays the graph of its bucket, which
  // was recorded with one logit row (and sampling row) per sequence: row i for sequence i.
  const bool graph = all_single && !host_logits && graphs_enabled();
  int bucket = n_run;
  if (graph) {
    const std::vector<int> bk = buckets(m.S);
    bucket = *std::lower_bound(bk.begin(), bk.end(), n_run);
    const uint64_t key[2] = {m.lane->generation(), m.buffers_gen};
    if (!std::equal(key, key + 2, m.graphs_key) || !m.graphs.count(bucket)) capture_graphs();
  }

  // Stage: token rows, logit rows and sampling rows in execution order.
  int32_t* h = m.hin();
  std::vector<ops::AttentionSeq> seqs;
  std::vector<int> first_row(n), n_rows(n), sample_row_of(n, -1), token_row0(n);
  int row = 0, r = 0;
  for (int k = 0; k < n_run; ++k) {
    const int i = order[k];
    const StepSeq& s = in[i];
    const int32_t len = s.kv->length(), cnt = static_cast<int32_t>(s.tokens.size());
    token_row0[i] = row;
    for (int32_t j = 0; j < cnt; ++j) {
      h[row + j] = s.tokens[j];
      h[m.off_pos + row + j] = len + j;
      h[m.off_slots + row + j] = s.kv->slot(*m.cache, len + j);
    }
    h[m.off_info + 3 * k + 0] = row;
    h[m.off_info + 3 * k + 1] = cnt;
    h[m.off_info + 3 * k + 2] = len + cnt;
    int32_t* table = h + m.off_tables + size_t(k) * m.W;
    const int used = (len + cnt + m.bs - 1) / m.bs;
    std::copy_n(s.kv->block_table().data(), used, table);
    std::fill(table + used, table + m.W, -1);
    seqs.push_back({row, cnt, len + cnt, s.kv->block_table().data()});

    first_row[i] = r;
    const int rows_out = s.logits == LogitRows::All                             ? cnt
                         : (graph || s.logits == LogitRows::Last || s.sampling) ? 1
                                                                                : 0;
    for (int j = 0; j < rows_out; ++j) {
      h[m.off_rows + r + j] = row + cnt - rows_out + j;
      m.host_sample_rows()[r + j] = ops::SampleRow{};
    }
    n_rows[i] = rows_out;
    if (s.sampling) {
      sample_row_of[i] = r + rows_out - 1;
      m.host_sample_rows()[sample_row_of[i]] = srows[k];
    }
    r += rows_out;
    row += cnt;
  }
  std::copy(entries.begin(), entries.end(), reinterpret_cast<ops::PenaltyEntry*>(h + m.off_pen));
  const int R = r;

  if (graph) {
    for (int i = n_run; i < bucket; ++i) m.stage_pad_row(i);
    m.upload(bucket, static_cast<int>(entries.size()));
    m.graphs.at(bucket).graph->launch();
    res.graph = true;
  } else {
    m.ensure_logit_rows(ctx_, std::max(R, 1));
    m.upload(n_run, static_cast<int>(entries.size()));
    const float scale = 1.f / std::sqrt(static_cast<float>(m.model->config().head_dim));
    const ops::AttentionPlan plan =
        m.model->plan_attention(ctx_, m.attention_batch(seqs, scale), m.cache->layers(), m.scratch);
    if (host_logits) all_logits = Tensor::empty_host(DType::F32, {R, m.vocab});
    m.enqueue(ctx_, T, R, plan, host_logits ? &all_logits : nullptr);
  }
  m.lane->record()->wait();

  // Results, in the caller's order.
  const auto* outs = static_cast<const ops::SampleOut*>(m.host_out->data());
  const auto* errs = static_cast<const unsigned*>(m.host_err->data());
  for (int i : order) {
    SeqResult& sr = res.seqs[i];
    unsigned flags = 0;
    for (size_t j = 0; j < in[i].tokens.size(); ++j) flags |= errs[token_row0[i] + j];
    if (flags) sr.error = row_error_text(flags);
    if (sample_row_of[i] >= 0) {
      const ops::SampleOut& o = outs[sample_row_of[i]];
      sr.token = o.token;
      if (in[i].top_logprobs >= 0) sr.logprob = to_logprob(o);
      if (!flags && (o.token < 0 || o.token >= m.vocab)) sr.error = "the sampler returned no token";
    }
  }
  if (host_logits) {
    int64_t want = 0;
    for (int i : order)
      if (in[i].logits != LogitRows::None) want += n_rows[i];
    const Tensor& all = all_logits;
    res.logits = Tensor::empty_host(DType::F32, {want, m.vocab});
    int64_t at = 0;
    for (int i = 0; i < n; ++i) {  // caller order
      if (in[i].logits == LogitRows::None || !failed[i].empty()) continue;
      std::memcpy(res.logits.row(at), all.row(first_row[i]), size_t(n_rows[i]) * all.row_nbytes());
      at += n_rows[i];
    }
  }
  for (int i : order) in[i].kv->set_length(in[i].kv->length() + static_cast<int32_t>(in[i].tokens.size()));
  res.ms = ms_since(t0);
  return res;
}

}  // namespace kestrel
