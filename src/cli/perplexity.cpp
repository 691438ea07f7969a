// `kestrel perplexity FILE`: perplexity of a text (llama.cpp's protocol by default), optionally saving
// log-probabilities or comparing them (KL divergence) with a saved reference run.
#include "engine/perplexity.h"

#include <cstdio>
#include <fstream>
#include <iterator>

#include "cli/common.h"
#include "core/error.h"

namespace kestrel::cli {
namespace {

struct PplFlags {
  ModelFlags model;
  std::string file;
  PerplexityOptions opt;
};

void run_perplexity(PplFlags f) {
  std::ifstream in(f.file, std::ios::binary);
  KS_CHECK(in.good(), "cannot read '{}'", f.file);
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  auto model = load(f.model);
  ModelFlags mf = f.model;
  mf.ctx_size = f.opt.n_ctx;
  mf.batch_size = std::max(mf.batch_size, f.opt.n_ctx);  // one forward step per window
  Session session(*model->decoder, make_context(mf), session_options(mf, *model));
  ProgressBar bar("perplexity", 1);
  const double t0 = now_seconds();
  PerplexityResult r = perplexity(session, *model->tokenizer, text, f.opt, [&](int c, int n, double ppl) {
    bar = ProgressBar(fmt::format("perplexity (PPL {:.4f})", ppl), n);
    bar.update(c);
  });
  bar.finish();
  const double secs = now_seconds() - t0;
  std::printf("tokens %lld, chunks %d of %d tokens%s, scored %lld, %.1f s (%.1f tok/s)\n",
              static_cast<long long>(r.n_tokens), r.chunks, f.opt.n_ctx,
              f.opt.stride ? fmt::format(" (stride {})", f.opt.stride).c_str() : "", static_cast<long long>(r.scored),
              secs, r.chunks * static_cast<double>(f.opt.n_ctx) / secs);
  std::printf("Final estimate: PPL = %.4f +/- %.5f\n", r.ppl, r.ppl_stderr);
  if (r.kl_mean) {
    std::printf("reference PPL  %.4f\n", *r.reference_ppl);
    std::printf("KL divergence  mean %.6f, max %.6f\n", *r.kl_mean, *r.kl_max);
    std::printf("same top-1     %.2f%%\n", 100 * *r.top1_agreement);
  }
}

}  // namespace

void register_perplexity(CLI::App& app) {
  auto f = std::make_shared<PplFlags>();
  CLI::App* cmd = app.add_subcommand(
      "perplexity",
      "measure perplexity on a text file (llama.cpp protocol: context-sized chunks, BOS first, second half scored)");
  cmd->add_option("file", f->file, "text file")->required();
  cmd->add_option("-c,--ctx-size", f->opt.n_ctx, "tokens per window")->check(CLI::Range(8, 1 << 20));
  cmd->add_option("--stride", f->opt.stride,
                  "sliding-window protocol instead: windows start every STRIDE tokens and score only new tokens "
                  "(0 = llama.cpp protocol)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--chunks", f->opt.max_chunks, "evaluate at most this many windows (0 = all)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--save-logits", f->opt.save_logits, "write the scored log-probabilities to this file (f16)");
  cmd->add_option("--kl-reference", f->opt.kl_reference,
                  "compare with a file from --save-logits: KL divergence and top-1 agreement");
  // The model flags minus --ctx-size, which is the window here.
  add_model_flags(*cmd, f->model, /*ctx_flag=*/false);
  cmd->callback([f] { run_perplexity(*f); });
}

}  // namespace kestrel::cli
