#include "engine/executor.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <map>

#include "backends/backends.h"
#include "core/convert.h"
#include "core/error.h"
#include "core/log.h"

namespace kestrel {
namespace {

constexpr int kRowWords = sizeof(ops::SampleRow) / 4;
constexpr int kOutWords = sizeof(ops::SampleOut) / 4;
constexpr int kEntryWords = sizeof(ops::PenaltyEntry) / 4;
constexpr int kSlots = 2;  // steps in flight at most: one running, one being planned behind it

using Clock = std::chrono::steady_clock;

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
  // The last bucket is max_seqs itself: a larger one would pad a step past the rows the scratch and the
  // staging layout hold (S sequences, T >= S tokens).
  while (!b.empty() && b.back() >= max_seqs) b.pop_back();
  b.push_back(max_seqs);
  return b;
}

// The staging layout, in i32 words, with fixed offsets so recorded graphs can keep pointing at them: the
// device buffer dev_in, filled from one of two host buffers (page-locked on CUDA) with one async copy:
//   tokens[T] positions[T] slots[T] logit_rows[T] from[T] seq_info[S*3] sample_rows[T*kRowWords] tables[S*W]
//   penalties[P*kEntryWords] masks[M*mask_words] embedding_rows[T]
// Prompt embeddings travel apart, from a host buffer per slot (made on first use) to dev_emb, in the
// activation dtype. Coming back, per slot: sample outputs [T*kOutWords] and the lane's row-error words [T].
struct Executor::Impl {
  Decoder* model;
  KvCache* cache;
  ops::Runtime* lane;
  int T, S, W, bs, vocab;
  int P = 0;  // penalty entry capacity (grows)
  int M = 0;  // token-mask row capacity (grows)
  int mask_words = 0;
  int pad_block = -1;
  size_t off_pos, off_slots, off_rows, off_from, off_info, off_sample, off_tables, off_pen, off_mask, off_emb, words;
  Tensor dev_in, dev_out, logits;
  Tensor dev_emb;            // prompt embeddings [T, hidden] (activation dtype), made on first use
  Decoder::Scratch scratch;  // this executor's activations (its lane's own)
  uint64_t buffers_gen = 0;  // bumped when dev_in or logits move

  // What a step in flight needs until it is collected.
  struct Slot {
    std::unique_ptr<ops::HostBuffer> in, out, err;
    std::unique_ptr<ops::HostBuffer> emb;  // the step's prompt embeddings, staged (made on first use)
    std::unique_ptr<ops::Event> start, done;
    bool busy = false;
    // The step's bookkeeping, in the caller's order.
    int n = 0, rows = 0;
    std::vector<int> order, sample_row_of, token_row0, first_row, n_rows, n_tokens, tops;
    std::vector<std::string> failed;
    // Sampling not queued yet: for each StepSeq row with mask_later, in order, the mask row its mask goes
    // to (-1: the row failed and is left out); then sampling over `sample_rows` rows (the bucket's sampling
    // graph when graph is set) and the readback of `tokens` error words.
    std::vector<int> late;
    int sample_rows = 0, tokens = 0;
    std::vector<LogitRows> want;
    Tensor host_logits;
    // Windowed KV formats: the blocks the step seals ({open id, code id} rows; host, CPU caches only).
    Tensor seals;
    bool graph = false;
    Clock::time_point t0;
  };
  Slot slots[kSlots];
  int next_slot = 0;
  std::deque<int> queue;                // slots in submission order
  std::vector<int> last_sample_row_of;  // the previous submitted step's: its StepSeq index -> sample row

  struct Recorded {
    StepAttention plan;
    std::unique_ptr<ops::Graph> graph;   // the forward
    std::unique_ptr<ops::Graph> sample;  // ops::sample of its rows (apart, so masks may arrive in between)
  };
  std::map<int, Recorded> graphs;  // by bucket
  uint64_t graphs_key[2] = {~0ull, ~0ull};

  Tensor section(size_t offset, std::vector<int64_t> shape) const {
    Tensor t = dev_in;
    t.dtype = DType::I32;
    t.data = dev_in.ptr<int32_t>() + offset;
    t.shape = std::move(shape);
    return t;
  }

  void layout() {
    off_pos = T;
    off_slots = 2 * size_t(T);
    off_rows = 3 * size_t(T);
    off_from = 4 * size_t(T);
    off_info = 5 * size_t(T);
    off_sample = off_info + 3 * size_t(S);
    off_tables = off_sample + size_t(T) * kRowWords;
    off_pen = off_tables + size_t(S) * W;
    off_mask = off_pen + size_t(P) * kEntryWords;
    off_emb = off_mask + size_t(M) * mask_words;
    words = off_emb + size_t(T);
  }

  // (Re)allocates the staging buffers; nothing may be in flight.
  void allocate_inputs(const ops::Context& ctx) {
    layout();
    for (Slot& s : slots) {
      s.in = lane->host_buffer(words * 4);
      std::memset(s.in->data(), 0, words * 4);
    }
    dev_in = ops::allocate(ctx, DType::I32, {static_cast<int64_t>(words)});
    ++buffers_gen;
  }

  void ensure_logit_rows(const ops::Context& ctx, int64_t R) {
    if (!logits.empty() && logits.dim(0) >= R) return;
    logits = ops::allocate(ctx, DType::F32, {std::max<int64_t>(R, S), vocab});
    ++buffers_gen;
  }

  // Sequence i of the staged step is a padding row: one token at position 0 written to the reserved block.
  void stage_pad_row(int32_t* h, int i) {
    h[i] = 0;
    h[off_pos + i] = 0;
    h[off_slots + i] = pad_block * bs;
    h[off_rows + i] = i;
    h[off_from + i] = -1;
    h[off_info + 3 * i + 0] = i;
    h[off_info + 3 * i + 1] = 1;
    h[off_info + 3 * i + 2] = 1;
    reinterpret_cast<ops::SampleRow*>(h + off_sample)[i] = ops::SampleRow{};
    int32_t* table = h + off_tables + size_t(i) * W;
    table[0] = pad_block;
    std::fill(table + 1, table + W, -1);
  }

  // Copies the staged words [0, off_tables + seqs * W), the used penalty entries and token masks.
  void upload(const int32_t* h, int seqs, int entries, int masks) {
    lane->copy_async(dev_in.data, h, (off_tables + size_t(seqs) * W) * 4);
    if (entries > 0) lane->copy_async(dev_in.ptr<int32_t>() + off_pen, h + off_pen, size_t(entries) * kEntryWords * 4);
    if (masks > 0) lane->copy_async(dev_in.ptr<int32_t>() + off_mask, h + off_mask, size_t(masks) * mask_words * 4);
  }
  // Copies a slot's staged prompt embeddings, `rows` of them, and their row numbers.
  void upload_embeddings(const Slot& s, int rows) {
    lane->copy_async(dev_in.ptr<int32_t>() + off_emb, static_cast<const int32_t*>(s.in->data()) + off_emb,
                     size_t(rows) * 4);
    lane->copy_async(dev_emb.data, s.emb->data(), size_t(rows) * dev_emb.row_nbytes());
  }

  // The model's plan_attention sets the softmax scale and the sliding window.
  ops::AttentionBatch attention_batch(const std::vector<ops::AttentionSeq>& seqs, int n_decode) const {
    ops::AttentionBatch ab;
    ab.seqs = seqs;
    ab.n_decode = n_decode;
    const auto n = static_cast<int64_t>(seqs.size());
    ab.block_tables = section(off_tables, {n, W});
    ab.seq_info = section(off_info, {n, 3});
    return ab;
  }

  // The device work of a step (eager, or recorded into a graph): the previous step's samples fed in,
  // forward (with `embedded` rows of prompt embeddings), the raw logits to `host_logits` (when given, before
  // the penalties change them); then, apart, sampling.
  void enqueue(const ops::Context& ctx, int t, int r, const StepAttention& plan, Tensor* host_logits = nullptr,
               const Tensor& seals = {}, int embedded = 0) {
    StepInputs in;
    in.seals = seals;
    if (embedded > 0) {
      in.embeddings = dev_emb.slice_rows(0, embedded);
      in.embedding_rows = section(off_emb, {embedded});
    }
    in.tokens = section(0, {t});
    in.positions = section(off_pos, {t});
    in.slots = section(off_slots, {t});
    in.logit_rows = section(off_rows, {r});
    in.attention = &plan;
    ops::feed_sampled(ctx, in.tokens, section(off_from, {t}), dev_out);
    Tensor lg = logits.slice_rows(0, r);
    model->forward(ctx, in, cache->layers(), scratch, lg);
    if (host_logits) lane->copy_async(host_logits->data, lg.data, lg.nbytes());
  }
  void enqueue_sample(const ops::Context& ctx, int r) {
    Tensor lg = logits.slice_rows(0, r);
    Tensor rows = section(off_sample, {r, kRowWords});
    Tensor pen = P > 0 ? section(off_pen, {P, kEntryWords}) : Tensor{};
    Tensor out = dev_out.slice_rows(0, r);
    ops::sample(ctx, lg, rows, pen, out, M > 0 ? section(off_mask, {M, mask_words}) : Tensor{});
  }

  // The rest of a step once its masks are staged: sampling (the bucket's graph, or eagerly), readback.
  void finish_step(const ops::Context& ctx, Slot& s) {
    if (s.graph)
      graphs.at(s.sample_rows).sample->launch();
    else
      enqueue_sample(ctx, s.sample_rows);
    enqueue_readback(s, s.tokens, s.sample_rows);
  }

  // After the step's work: its outputs and row-error words back to the slot (the words cleared), and the
  // event collect() waits for.
  void enqueue_readback(Slot& s, int t, int r) {
    lane->copy_async(s.out->data(), dev_out.data, size_t(r) * kOutWords * 4);
    const ops::ErrorRows err = lane->error_rows(T);
    lane->copy_async(s.err->data(), err.words, size_t(t) * 4);
    lane->fill_async(err.words, 0, size_t(t) * 4);
    s.done = lane->record(true);
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
  m.mask_words = (m.vocab + 31) / 32;
  m.P = 16 * m.S;
  m.scratch = model.make_scratch(ctx_, m.T);
  m.allocate_inputs(ctx_);
  m.dev_out = ops::allocate(ctx_, DType::I32, {m.T, kOutWords});
  m.lane->fill_async(m.dev_out.data, 0xff, m.dev_out.nbytes());  // token -1: nothing sampled yet
  for (Impl::Slot& s : m.slots) {
    s.out = m.lane->host_buffer(size_t(m.T) * kOutWords * 4);
    s.err = m.lane->host_buffer(size_t(m.T) * 4);
  }
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

int Executor::reserved_blocks() const {
  return impl_->pad_block >= 0 ? 1 : 0;
}

int Executor::in_flight() const {
  return static_cast<int>(impl_->queue.size());
}

void Executor::capture_graphs() {
  if (!graphs_enabled()) return;
  KS_CHECK(!awaiting_masks(), "capture_graphs(): the last step is still waiting for supply_masks()");
  Impl& m = *impl_;
  // Recording runs steps of padding rows, which overwrite the sample outputs the next step may feed
  // from: steps in flight are waited for (their outputs are already on their way back) and the outputs
  // kept aside meanwhile.
  m.lane->synchronize();
  Tensor saved_out;
  if (!m.queue.empty()) {
    saved_out = ops::allocate(ctx_, DType::I32, m.dev_out.shape);
    m.lane->copy_async(saved_out.data, m.dev_out.data, m.dev_out.nbytes());
  }
  auto* h = static_cast<int32_t*>(m.slots[0].in->data());
  // A step of b padding rows, staged and planned for the longest sequence a graph may see (the kernels
  // read the real lengths on the device).
  auto stage = [&](int b) {
    for (int i = 0; i < b; ++i) m.stage_pad_row(h, i);
    m.upload(h, b, 0, 0);
    std::vector<ops::AttentionSeq> seqs;
    for (int i = 0; i < b; ++i) seqs.push_back({i, 1, m.W * m.bs, nullptr});
    return m.model->plan_attention(ctx_, m.attention_batch(seqs, b), m.cache->layers(), m.scratch);
  };
  // Every bucket still to record runs once eagerly first, all before any recording: the lane's lazily made
  // state (library handles, their plans, workspaces that grow to the largest call) exists by then, and a
  // workspace that grew invalidates the graphs recorded before (the key below).
  for (int b : buckets(m.S)) {
    if (m.graphs.count(b)) continue;
    const StepAttention plan = stage(b);
    m.enqueue(ctx_, b, b, plan);
    m.enqueue_sample(ctx_, b);
    m.lane->synchronize();
  }
  const uint64_t key[2] = {m.lane->generation(), m.buffers_gen};
  if (!std::equal(key, key + 2, m.graphs_key)) {
    m.graphs.clear();
    std::copy(key, key + 2, m.graphs_key);
  }
  for (int b : buckets(m.S)) {
    if (m.graphs.count(b)) continue;
    Impl::Recorded rec;
    rec.plan = stage(b);
    m.lane->synchronize();
    rec.graph = m.lane->capture([&] { m.enqueue(ctx_, b, b, rec.plan); });
    rec.sample = m.lane->capture([&] { m.enqueue_sample(ctx_, b); });
    m.graphs.emplace(b, std::move(rec));
  }
  m.lane->take_row_errors(m.T);  // the padding rows' runs raised nothing; start clean anyway
  if (!saved_out.empty()) m.lane->copy_async(m.dev_out.data, saved_out.data, m.dev_out.nbytes());
  KS_CHECK(key[0] == m.lane->generation() && key[1] == m.buffers_gen,
           "internal error: a buffer moved while recording the decode graphs");
}

void Executor::submit(std::span<const StepSeq> in) {
  const auto t0 = Clock::now();
  Impl& m = *impl_;
  const int n = static_cast<int>(in.size());
  KS_CHECK(n >= 1, "a step with no sequences");
  // The staged inputs on the device are shared: the last step's sampling must be queued before they change.
  KS_CHECK(!awaiting_masks(), "submit(): the last step is still waiting for supply_masks()");
  KS_CHECK(n <= m.S, "a step of {} sequences; the executor holds {}", n, m.S);
  KS_CHECK(m.queue.size() < kSlots, "internal error: {} steps already in flight", m.queue.size());

  // The step's shape is the caller's contract (a violation throws and nothing runs); what a sequence
  // carries (token ids, its block table) is checked per sequence: a bad one fails alone and is left out.
  std::vector<std::string> failed(n);
  int64_t total = 0;
  const int64_t hidden = m.model->config().hidden;
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
    KS_CHECK(s.prev_index < 0 || s.tokens.size() == 1, "a token fed from the previous step comes alone");
    KS_CHECK(s.embeddings.empty() || s.embeddings.size() == s.tokens.size() * static_cast<size_t>(hidden),
             "a sequence brings {} embedding values for {} tokens; it needs {} (hidden size {})", s.embeddings.size(),
             s.tokens.size(), s.tokens.size() * static_cast<size_t>(hidden), hidden);
    KS_CHECK(s.embeddings.empty() || s.prev_index < 0, "a token fed from the previous step comes without embeddings");
    KS_CHECK(!s.embeddings.empty() || m.model->first_layer() == 0,
             "the model runs blocks [{}, {}) (Decoder::set_layers): every sequence must bring the residual stream at "
             "block {}'s input as embeddings",
             m.model->first_layer(), m.model->last_layer(), m.model->first_layer());
    if (s.sampling) s.sampling->validate();
    total += static_cast<int64_t>(s.tokens.size());
    for (int32_t t : s.tokens)
      if (t < 0 || t >= m.vocab) failed[i] = fmt::format("token id {} is outside the vocabulary (size {})", t, m.vocab);
    if (s.prev_index >= 0 &&
        (s.prev_index >= static_cast<int>(m.last_sample_row_of.size()) || m.last_sample_row_of[s.prev_index] < 0))
      failed[i] = "its input token was to come from a previous step that did not sample it";
    const int32_t blocks = m.cache->blocks().num_ids();
    for (size_t b = 0; b < static_cast<size_t>((need + m.bs - 1) / m.bs); ++b)
      if (s.kv->block_table()[b] < 0 || s.kv->block_table()[b] >= blocks)
        failed[i] =
            fmt::format("KV block {} of the sequence is outside the cache ({} blocks)", s.kv->block_table()[b], blocks);
    if (s.sampling)
      for (int32_t t : s.history)
        if (t < 0 || t >= m.vocab) failed[i] = fmt::format("penalty history token {} is outside the vocabulary", t);
    KS_CHECK(!s.mask_later || (s.sampling && s.allowed.empty()), "a row whose mask comes later must sample, unmasked");
    KS_CHECK(s.allowed.empty() || (s.sampling && s.allowed.size() == static_cast<size_t>(m.mask_words)),
             "a token mask of {} words for a vocabulary of {} (it needs {}, and a sampled row)", s.allowed.size(),
             m.vocab, m.mask_words);
  }
  KS_CHECK(total <= m.T, "a step of {} tokens; the executor holds {}", total, m.T);

  // The sequences that run, decode rows first (stable), so the attention plan gives them the decode kernel.
  std::vector<int> order;
  bool host_logits = false, all_single = true, embedded = false;
  int T = 0;
  for (int i = 0; i < n; ++i) {
    if (!failed[i].empty()) continue;
    order.push_back(i);
    T += static_cast<int>(in[i].tokens.size());
    host_logits |= in[i].logits != LogitRows::None;
    all_single &= in[i].tokens.size() == 1;
    embedded |= !in[i].embeddings.empty();
  }
  const auto decode_end = std::stable_partition(order.begin(), order.end(),
                                                [&](int i) { return in[i].tokens.size() == 1 && !in[i].prompt; });
  const int n_run = static_cast<int>(order.size());
  const int n_decode = static_cast<int>(decode_end - order.begin());

  // Sampling rows, penalty entries and token masks first: they may outgrow the staging buffers.
  std::vector<ops::PenaltyEntry> entries;
  std::vector<ops::SampleRow> srows(n_run);
  std::vector<std::span<const uint32_t>> masks;
  for (int k = 0; k < n_run; ++k) {
    const StepSeq& s = in[order[k]];
    if (!s.sampling) continue;
    srows[k] = sample_row(*s.sampling, s.draw, s.top_logprobs);
    add_penalties(*s.sampling, s.history, s.generated, srows[k], entries);
    if (!s.allowed.empty()) {
      srows[k].mask_row = static_cast<int32_t>(masks.size());
      masks.push_back(s.allowed);
    }
  }
  // Masks that supply_masks() brings take the rows after these, in StepSeq order.
  int n_late = 0;
  for (int k = 0; k < n_run; ++k)
    if (in[order[k]].mask_later) ++n_late;
  const int n_entries = static_cast<int>(entries.size()), n_masks = static_cast<int>(masks.size());
  if (n_entries > m.P || n_masks + n_late > m.M) {  // grow the staging buffers (graphs are recorded again)
    m.lane->synchronize();
    if (n_entries > m.P) m.P = std::max(n_entries, 2 * m.P);
    if (n_masks + n_late > m.M) m.M = std::max(n_masks + n_late, 2 * m.M);
    m.allocate_inputs(ctx_);
  }

  // A step of single-token rows that wants no logits on the host and brings no embeddings replays the graph
  // of its bucket, which was recorded with one logit row (and sampling row) per sequence: row i for sequence i.
  const bool graph = n_run > 0 && all_single && !host_logits && !embedded && graphs_enabled();
  int bucket = n_run;
  if (graph) {
    const std::vector<int> bk = buckets(m.S);
    bucket = *std::lower_bound(bk.begin(), bk.end(), n_run);
    const uint64_t key[2] = {m.lane->generation(), m.buffers_gen};
    if (!std::equal(key, key + 2, m.graphs_key) || !m.graphs.count(bucket)) capture_graphs();
  }

  // Stage into a free slot: token rows, logit rows and sampling rows in execution order.
  const int si = m.next_slot;
  m.next_slot = (m.next_slot + 1) % kSlots;
  Impl::Slot& slot = m.slots[si];
  KS_CHECK(!slot.busy, "internal error: staging slot {} is still in flight", si);
  auto* h = static_cast<int32_t*>(slot.in->data());
  slot.n = n;
  slot.failed = failed;
  slot.order = order;
  slot.sample_row_of.assign(n, -1);
  slot.token_row0.assign(n, 0);
  slot.first_row.assign(n, 0);
  slot.n_rows.assign(n, 0);
  slot.n_tokens.assign(n, 0);
  slot.tops.assign(n, -1);
  slot.want.assign(n, LogitRows::None);
  slot.late.clear();
  int next_late = n_masks;
  std::vector<int> late_of(n, -1);  // StepSeq index -> its late mask row
  for (int i = 0; i < n; ++i)
    if (in[i].mask_later) {
      if (failed[i].empty()) late_of[i] = next_late++;
      slot.late.push_back(late_of[i]);
    }
  const DType act = m.scratch.x.dtype;
  if (embedded) {
    if (m.dev_emb.empty()) m.dev_emb = ops::allocate(ctx_, act, {int64_t{m.T}, hidden});
    if (!slot.emb) slot.emb = m.lane->host_buffer(size_t(m.T) * m.dev_emb.row_nbytes());
  }
  std::vector<ops::AttentionSeq> seqs;
  std::vector<std::array<int32_t, 2>> seals;
  int row = 0, r = 0, e = 0;
  for (int k = 0; k < n_run; ++k) {
    const int i = order[k];
    const StepSeq& s = in[i];
    const int32_t len = s.kv->length(), cnt = static_cast<int32_t>(s.tokens.size());
    for (const auto& seal : s.kv->begin_step(*m.cache, len + cnt)) seals.push_back(seal);
    slot.token_row0[i] = row;
    slot.n_tokens[i] = cnt;
    slot.tops[i] = s.top_logprobs;
    slot.want[i] = s.logits;
    for (int32_t j = 0; j < cnt; ++j) {
      h[row + j] = s.tokens[j];
      h[m.off_pos + row + j] = len + j;
      h[m.off_slots + row + j] = s.kv->slot(*m.cache, len + j);
      h[m.off_from + row + j] = s.prev_index >= 0 ? m.last_sample_row_of[s.prev_index] : -1;
    }
    if (!s.embeddings.empty()) {
      for (int32_t j = 0; j < cnt; ++j) h[m.off_emb + e + j] = row + j;
      convert_rows(DType::F32, s.embeddings.data(), act,
                   static_cast<char*>(slot.emb->data()) + size_t(e) * m.dev_emb.row_nbytes(), cnt, hidden);
      e += cnt;
    }
    h[m.off_info + 3 * k + 0] = row;
    h[m.off_info + 3 * k + 1] = cnt;
    h[m.off_info + 3 * k + 2] = len + cnt;
    int32_t* table = h + m.off_tables + size_t(k) * m.W;
    const int used = (len + cnt + m.bs - 1) / m.bs;
    std::copy_n(s.kv->block_table().data(), used, table);
    std::fill(table + used, table + m.W, -1);
    seqs.push_back({row, cnt, len + cnt, s.kv->block_table().data()});

    slot.first_row[i] = r;
    const int rows_out = s.logits == LogitRows::All                             ? cnt
                         : (graph || s.logits == LogitRows::Last || s.sampling) ? 1
                                                                                : 0;
    for (int j = 0; j < rows_out; ++j) {
      h[m.off_rows + r + j] = row + cnt - rows_out + j;
      reinterpret_cast<ops::SampleRow*>(h + m.off_sample)[r + j] = ops::SampleRow{};
    }
    slot.n_rows[i] = rows_out;
    if (s.sampling) {
      slot.sample_row_of[i] = r + rows_out - 1;
      if (late_of[i] >= 0) srows[k].mask_row = late_of[i];
      reinterpret_cast<ops::SampleRow*>(h + m.off_sample)[slot.sample_row_of[i]] = srows[k];
    }
    r += rows_out;
    row += cnt;
  }
  std::copy(entries.begin(), entries.end(), reinterpret_cast<ops::PenaltyEntry*>(h + m.off_pen));
  for (int j = 0; j < n_masks; ++j)
    std::copy(masks[j].begin(), masks[j].end(), h + m.off_mask + size_t(j) * m.mask_words);
  const int R = r;
  slot.rows = R;
  slot.graph = graph;
  slot.t0 = t0;
  slot.host_logits = Tensor{};
  slot.seals = Tensor{};
  if (!seals.empty()) {
    KS_CHECK(!graph && ctx_.device == Device::Cpu, "internal error: KV seals in a CUDA step");
    slot.seals = Tensor::empty_host(DType::I32, {static_cast<int64_t>(seals.size()), int64_t{2}});
    std::copy_n(seals.front().data(), 2 * seals.size(), slot.seals.ptr<int32_t>());
  }

  slot.start = m.lane->record(true);
  if (n_run > 0) {
    if (graph) {
      for (int i = n_run; i < bucket; ++i) m.stage_pad_row(h, i);
      m.upload(h, bucket, n_entries, n_masks);
      m.graphs.at(bucket).graph->launch();
      slot.sample_rows = slot.tokens = bucket;
    } else {
      m.ensure_logit_rows(ctx_, std::max(R, 1));
      m.upload(h, n_run, n_entries, n_masks);
      if (e > 0) m.upload_embeddings(slot, e);
      const StepAttention plan =
          m.model->plan_attention(ctx_, m.attention_batch(seqs, n_decode), m.cache->layers(), m.scratch);
      if (host_logits) slot.host_logits = Tensor::empty_host(DType::F32, {R, m.vocab});
      m.enqueue(ctx_, T, R, plan, host_logits ? &slot.host_logits : nullptr, slot.seals, e);
      slot.sample_rows = R;
      slot.tokens = T;
    }
    if (slot.late.empty()) m.finish_step(ctx_, slot);
  } else {
    slot.late.clear();  // nothing runs: nothing to wait for
    slot.done = m.lane->record(true);
  }
  slot.busy = true;
  m.queue.push_back(si);
  m.last_sample_row_of = slot.sample_row_of;
  for (int i : order) in[i].kv->set_length(*m.cache, in[i].kv->length() + static_cast<int32_t>(in[i].tokens.size()));
}

void Executor::supply_masks(std::span<const std::span<const uint32_t>> masks) {
  Impl& m = *impl_;
  KS_CHECK(!m.queue.empty(), "supply_masks() with no step in flight");
  Impl::Slot& slot = m.slots[m.queue.back()];
  KS_CHECK(!slot.late.empty(), "supply_masks(): the last step wants no masks");
  KS_CHECK(masks.size() == slot.late.size(), "supply_masks(): {} masks for {} rows", masks.size(), slot.late.size());
  auto* h = static_cast<int32_t*>(slot.in->data());
  int lo = INT32_MAX, hi = -1;
  for (size_t j = 0; j < masks.size(); ++j) {
    KS_CHECK(masks[j].size() == static_cast<size_t>(m.mask_words), "a token mask of {} words; the vocabulary needs {}",
             masks[j].size(), m.mask_words);
    if (slot.late[j] < 0) continue;
    std::copy(masks[j].begin(), masks[j].end(), h + m.off_mask + size_t(slot.late[j]) * m.mask_words);
    lo = std::min(lo, slot.late[j]);
    hi = std::max(hi, slot.late[j]);
  }
  if (hi >= lo) {
    const size_t first = m.off_mask + size_t(lo) * m.mask_words;
    m.lane->copy_async(m.dev_in.ptr<int32_t>() + first, h + first, size_t(hi - lo + 1) * m.mask_words * 4);
  }
  slot.late.clear();
  m.finish_step(ctx_, slot);
}

bool Executor::awaiting_masks() const {
  const Impl& m = *impl_;
  return !m.queue.empty() && !m.slots[m.queue.back()].late.empty();
}

StepResult Executor::collect() {
  Impl& m = *impl_;
  KS_CHECK(!m.queue.empty(), "collect() with no step in flight");
  KS_CHECK(m.slots[m.queue.front()].late.empty(), "collect(): the step's masks were never supplied");
  Impl::Slot& slot = m.slots[m.queue.front()];
  m.queue.pop_front();
  slot.done->wait();
  slot.busy = false;

  StepResult res;
  res.graph = slot.graph;
  res.seqs.resize(slot.n);
  const auto* outs = static_cast<const ops::SampleOut*>(slot.out->data());
  const auto* errs = static_cast<const unsigned*>(slot.err->data());
  for (int i = 0; i < slot.n; ++i) res.seqs[i].error = slot.failed[i];
  for (int i : slot.order) {
    SeqResult& sr = res.seqs[i];
    unsigned flags = 0;
    for (int j = 0; j < slot.n_tokens[i]; ++j) flags |= errs[slot.token_row0[i] + j];
    if (flags) sr.error = row_error_text(flags);
    if (slot.sample_row_of[i] >= 0) {
      const ops::SampleOut& o = outs[slot.sample_row_of[i]];
      sr.token = o.token;
      if (slot.tops[i] >= 0) sr.logprob = to_logprob(o);
      if (!flags && (o.token < 0 || o.token >= m.vocab)) sr.error = "the sampler returned no token";
    }
  }
  if (!slot.host_logits.empty()) {
    int64_t want = 0;
    for (int i : slot.order)
      if (slot.want[i] != LogitRows::None) want += slot.n_rows[i];
    res.logits = Tensor::empty_host(DType::F32, {want, m.vocab});
    int64_t at = 0;
    for (int i = 0; i < slot.n; ++i) {  // the caller's order
      if (slot.want[i] == LogitRows::None || !slot.failed[i].empty()) continue;
      std::memcpy(res.logits.row(at), slot.host_logits.row(slot.first_row[i]),
                  size_t(slot.n_rows[i]) * slot.host_logits.row_nbytes());
      at += slot.n_rows[i];
    }
    slot.host_logits = Tensor{};
  }
  slot.seals = Tensor{};
  res.ms = std::chrono::duration<double, std::milli>(Clock::now() - slot.t0).count();
  res.device_ms = slot.done->ms_since(*slot.start);
  return res;
}

StepResult Executor::run(std::span<const StepSeq> seqs) {
  KS_CHECK(impl_->queue.empty(), "run() with steps in flight: collect them first");
  submit(seqs);
  return collect();
}

}  // namespace kestrel
