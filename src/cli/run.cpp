// `kestrel run`: one prompt in, streamed text out.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>

#include "cli/common.h"
#include "core/error.h"
#include "engine/chat_format.h"
#include "engine/generate.h"
#include "engine/sampling_defaults.h"

namespace kestrel::cli {
namespace {

struct RunFlags {
  ModelFlags model;
  SamplingParams sampling;
  SamplingOptions sampling_set;
  std::string prompt;
  std::string prompt_file;
  ConstraintFlags constraint;
  std::string system;
  int n_predict = 256;
  bool raw = false;
  bool ignore_eos = false;
  std::vector<std::string> stop;
};

void run(RunFlags f) {
  auto model = load(f.model);
  fill_sampling_defaults(f.sampling, f.sampling_set, *model);
  std::string prompt = f.prompt;
  KS_CHECK(prompt.empty() || f.prompt_file.empty(), "give the prompt as an argument or with --file, not both");
  if (!f.prompt_file.empty()) {
    std::ifstream in(f.prompt_file, std::ios::binary);
    KS_CHECK(in.good(), "cannot read the prompt file {}", f.prompt_file);
    prompt.assign(std::istreambuf_iterator<char>(in), {});
  } else if (prompt.empty() || prompt == "-") {
    prompt.assign(std::istreambuf_iterator<char>(std::cin), {});
  }
  KS_CHECK(!prompt.empty(), "empty prompt: pass it as an argument or on standard input");

  ChatFormatter chat(*model);
  const bool templated = !f.raw && chat.has_template();
  std::string text = prompt;
  if (templated) {
    nlohmann::json messages = nlohmann::json::array();
    if (!f.system.empty()) messages.push_back({{"role", "system"}, {"content", f.system}});
    messages.push_back({{"role", "user"}, {"content", prompt}});
    text = chat.render(messages, /*add_generation_prompt=*/true);
  }
  // A rendered template already holds its special tokens (BOS included); raw prompts get the
  // tokenizer's usual additions.
  const std::vector<int32_t> tokens = model->tokenizer->encode(text, !templated, /*parse_special=*/templated);

  Session session(*model->decoder, make_context(f.model), session_options(f.model, *model));
  GenerateOptions opt{.max_tokens = f.n_predict, .stop = f.stop, .ignore_eos = f.ignore_eos};
  opt.constraint = make_constraint(f.constraint, *model);
  GenerateResult r = generate(session, *model->tokenizer, f.sampling, tokens, opt, [](std::string_view s) {
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  });
  std::printf("\n");
  std::fflush(stdout);  // the text's last line ends before the stats (stderr is unbuffered)
  const size_t n_gen = r.tokens.size();
  const std::string seed = ", " + describe_sampling(f.sampling) +
                           (f.sampling.temperature > 0 ? fmt::format(", seed {}", f.sampling.seed) : std::string());
  std::fprintf(stderr,
               "kestrel: prompt %d tokens in %.2f s (%.1f tok/s); generated %zu tokens in %.2f s (%.1f tok/s), %s%s\n",
               r.prompt_tokens, r.prompt_seconds, r.prompt_tokens / std::max(r.prompt_seconds, 1e-9), n_gen,
               r.generate_seconds, n_gen / std::max(r.generate_seconds, 1e-9), r.finish_reason.c_str(), seed.c_str());
}

}  // namespace

void register_run(CLI::App& app) {
  auto f = std::make_shared<RunFlags>();
  CLI::App* cmd = app.add_subcommand("run", "generate text from a prompt, streaming it as it is produced");
  cmd->add_option("prompt,-p,--prompt", f->prompt, "the prompt (\"-\" or nothing: read standard input)");
  cmd->add_option("-f,--file", f->prompt_file, "read the prompt from this file");
  cmd->add_option("-n,--n-predict", f->n_predict, "maximum tokens to generate")->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--system", f->system, "system message (chat models)");
  cmd->add_flag("--raw", f->raw, "feed the prompt as is, without the model's chat template");
  cmd->add_flag("--ignore-eos", f->ignore_eos, "keep generating past end-of-generation tokens");
  cmd->add_option("--stop", f->stop, "stop when this text appears (repeatable: one text each)")
      ->allow_extra_args(false);
  add_model_flags(*cmd, f->model);
  f->sampling_set = add_sampling_flags(*cmd, f->sampling);
  add_constraint_flags(*cmd, f->constraint);
  cmd->callback([f] { run(*f); });
}

}  // namespace kestrel::cli
