#include "engine/perplexity.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "core/error.h"
#include "core/half.h"

namespace kestrel {
namespace {

constexpr char kMagic[4] = {'K', 'P', 'P', 'L'};
constexpr uint32_t kVersion = 1;

struct LogitsHeader {
  char magic[4];
  uint32_t version;
  uint32_t vocab;
  uint32_t n_ctx;
  uint32_t stride;
  uint32_t reserved;
  uint64_t n_positions;
  uint64_t token_hash;  // FNV-1a of the scored target tokens, so files of different texts don't mix
};

uint64_t fnv1a(const std::vector<int32_t>& v) {
  uint64_t h = 1469598103934665603ull;
  for (int32_t x : v)
    for (int b = 0; b < 4; ++b) h = (h ^ ((static_cast<uint32_t>(x) >> (8 * b)) & 0xff)) * 1099511628211ull;
  return h;
}

// One window to evaluate and the range of positions in it to score (targets are tokens[t], predicted by
// logits at t - 1).
struct Window {
  int64_t begin, end;            // tokens [begin, end)
  int64_t score_from, score_to;  // target positions [score_from, score_to) in absolute token indices
};

std::vector<Window> plan_windows(int64_t n_tokens, const PerplexityOptions& o) {
  std::vector<Window> w;
  if (o.stride == 0) {
    KS_CHECK(n_tokens >= 2 * o.n_ctx,
             "the text has {} tokens; llama.cpp's protocol needs at least 2 x {} (use a "
             "longer text or a smaller --ctx-size)",
             n_tokens, o.n_ctx);
    for (int64_t i = 0; i < n_tokens / o.n_ctx; ++i) {
      const int64_t b = i * o.n_ctx;
      w.push_back({b, b + o.n_ctx, b + o.n_ctx / 2 + 1, b + o.n_ctx});
    }
  } else {
    KS_CHECK(n_tokens >= 2, "the text has fewer than 2 tokens");
    int64_t scored_to = 1;
    for (int64_t b = 0; scored_to < n_tokens; b += o.stride) {
      const int64_t e = std::min<int64_t>(b + o.n_ctx, n_tokens);
      if (e <= scored_to) continue;
      w.push_back({b, e, std::max(scored_to, b + 1), e});
      scored_to = e;
    }
  }
  if (o.max_chunks > 0 && static_cast<int64_t>(w.size()) > o.max_chunks) w.resize(o.max_chunks);
  return w;
}

}  // namespace

void log_softmax(float* x, int64_t n) {
  const float mx = *std::max_element(x, x + n);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(x[i] - mx));
  const float lse = mx + static_cast<float>(std::log(sum));
  for (int64_t i = 0; i < n; ++i) x[i] -= lse;
}

PerplexityResult perplexity(Session& session, const Tokenizer& tok, const std::string& text,
                            const PerplexityOptions& opt, const std::function<void(int, int, double)>& progress) {
  KS_CHECK(opt.n_ctx >= 8 && opt.n_ctx <= session.n_ctx(), "perplexity context {} must be in [8, {}]", opt.n_ctx,
           session.n_ctx());
  KS_CHECK(opt.stride >= 0 && opt.stride <= opt.n_ctx, "stride must be in [0, context size]");
  std::vector<int32_t> tokens = tok.encode(text, /*add_special=*/true, /*parse_special=*/false);
  const int64_t vocab = session.model().config().vocab;
  const std::vector<Window> windows = plan_windows(static_cast<int64_t>(tokens.size()), opt);
  const bool bos_first = opt.stride == 0 && tok.add_bos() && tok.bos_id() >= 0;

  std::vector<int32_t> targets;
  for (const Window& w : windows)
    targets.insert(targets.end(), tokens.begin() + w.score_from, tokens.begin() + w.score_to);
  LogitsHeader header{};
  std::memcpy(header.magic, kMagic, 4);
  header.version = kVersion;
  header.vocab = static_cast<uint32_t>(vocab);
  header.n_ctx = static_cast<uint32_t>(opt.n_ctx);
  header.stride = static_cast<uint32_t>(opt.stride);
  header.n_positions = targets.size();
  header.token_hash = fnv1a(targets);

  std::ofstream save;
  if (!opt.save_logits.empty()) {
    save.open(opt.save_logits, std::ios::binary);
    KS_CHECK(save.good(), "cannot write '{}'", opt.save_logits);
    save.write(reinterpret_cast<const char*>(&header), sizeof header);
  }
  std::ifstream ref;
  if (!opt.kl_reference.empty()) {
    ref.open(opt.kl_reference, std::ios::binary);
    KS_CHECK(ref.good(), "cannot read the reference logits '{}'", opt.kl_reference);
    LogitsHeader rh{};
    ref.read(reinterpret_cast<char*>(&rh), sizeof rh);
    KS_CHECK(ref.good() && std::memcmp(rh.magic, kMagic, 4) == 0 && rh.version == kVersion,
             "'{}' is not a Kestrel logits file", opt.kl_reference);
    KS_CHECK(rh.vocab == header.vocab && rh.n_ctx == header.n_ctx && rh.stride == header.stride &&
                 rh.n_positions == header.n_positions && rh.token_hash == header.token_hash,
             "'{}' was made with a different text, tokenizer, context or stride (reference: vocab {}, ctx {}, {} "
             "positions)",
             opt.kl_reference, rh.vocab, rh.n_ctx, rh.n_positions);
  }

  PerplexityResult r;
  r.n_tokens = static_cast<int64_t>(tokens.size());
  double nll = 0, nll2 = 0, ref_nll = 0, kl_sum = 0, kl_max = 0;
  int64_t agree = 0;
  std::vector<uint16_t> half_row(vocab), ref_row(vocab);
  std::vector<float> ref_lp(vocab);
  for (size_t c = 0; c < windows.size(); ++c) {
    const Window& w = windows[c];
    std::vector<int32_t> input(tokens.begin() + w.begin, tokens.begin() + w.end);
    if (bos_first) input[0] = tok.bos_id();
    session.truncate(0);
    // Logits of the rows that predict the scored tokens only: the first is row score_from - 1 - begin.
    const int64_t first = w.score_from - 1 - w.begin;
    Tensor logits = session.feed_logits_from(input, first);
    for (int64_t t = w.score_from; t < w.score_to; ++t) {
      float* row = logits.ptr<float>() + (t - 1 - w.begin - first) * vocab;
      log_softmax(row, vocab);
      const double lp = row[tokens[t]];
      nll -= lp;
      nll2 += lp * lp;
      ++r.scored;
      if (save.is_open()) {
        for (int64_t i = 0; i < vocab; ++i) half_row[i] = f32_to_f16(row[i]);
        save.write(reinterpret_cast<const char*>(half_row.data()), vocab * 2);
      }
      if (ref.is_open()) {
        ref.read(reinterpret_cast<char*>(ref_row.data()), vocab * 2);
        KS_CHECK(ref.good(), "'{}' ends early", opt.kl_reference);
        // Compare at the file's f16 precision so that identical runs give exactly 0.
        double kl = 0;
        for (int64_t i = 0; i < vocab; ++i) {
          ref_lp[i] = f16_to_f32(ref_row[i]);
          kl += std::exp(static_cast<double>(ref_lp[i])) * (ref_lp[i] - f16_to_f32(f32_to_f16(row[i])));
        }
        kl_sum += kl;
        kl_max = std::max(kl_max, kl);
        ref_nll -= ref_lp[tokens[t]];
        agree +=
            std::max_element(ref_lp.begin(), ref_lp.end()) - ref_lp.begin() == std::max_element(row, row + vocab) - row;
      }
    }
    r.chunk_ppl.push_back(std::exp(nll / r.scored));
    if (progress) progress(static_cast<int>(c + 1), static_cast<int>(windows.size()), r.chunk_ppl.back());
  }
  session.truncate(0);
  r.chunks = static_cast<int>(windows.size());
  const double mean = nll / r.scored;
  r.ppl = std::exp(mean);
  // Same uncertainty estimate as llama.cpp: the standard error of the mean NLL, propagated through exp.
  const double var = nll2 / r.scored - mean * mean;
  r.ppl_stderr = r.scored > 1 ? r.ppl * std::sqrt(std::max(var, 0.0) / (r.scored - 1)) : 0;
  if (ref.is_open()) {
    r.reference_ppl = std::exp(ref_nll / r.scored);
    r.kl_mean = kl_sum / r.scored;
    r.kl_max = kl_max;
    r.top1_agreement = static_cast<double>(agree) / r.scored;
  }
  return r;
}

}  // namespace kestrel
