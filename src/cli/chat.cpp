// `kestrel chat`: an interactive conversation. The KV cache persists between turns: each turn renders
// the whole conversation with the chat template and only the tokens after the longest prefix already in
// the cache are computed.
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <optional>

#include "cli/common.h"
#include "cli/line_editor.h"
#include "core/error.h"
#include "engine/chat_format.h"
#include "engine/generate.h"

namespace kestrel::cli {
namespace {

// Ctrl-C during a reply stops the reply; at the prompt it ends the session (the read is interrupted).
std::atomic<bool> g_interrupted{false};
extern "C" void on_interrupt(int) {
  g_interrupted = true;
}

constexpr const char* kHelp =
    "  /help    this list\n"
    "  /reset   start the conversation over (the system message stays)\n"
    "  /exit    quit (also /quit, Ctrl-D, or Ctrl-C at the prompt)\n"
    "  Ctrl-C   while the model answers: stop the answer, keep the conversation\n"
    "  Up/Down  earlier messages; Left/Right, Home/End, Ctrl-A/E/K/U/W edit the line\n"
    "  //text   send a message that starts with '/'\n";

struct ChatFlags {
  ModelFlags model;
  SamplingParams sampling;
  SamplingOptions sampling_set;
  std::string system;
  int n_predict = 1024;
  ConstraintFlags constraint;  // applies to every reply
};

void chat(ChatFlags f) {
  auto model = load(f.model);
  fill_sampling_defaults(f.sampling, f.sampling_set, *model);
  const auto constraint = make_constraint(f.constraint, *model);
  ChatFormatter fmt(*model);
  KS_CHECK(fmt.has_template(), "{} has no chat template; use `kestrel run --raw` for plain completion", model->path);
  Session session(*model->decoder, make_context(f.model), session_options(f.model, *model));
  nlohmann::json messages = nlohmann::json::array();
  if (!f.system.empty()) messages.push_back({{"role", "system"}, {"content", f.system}});

  const bool tty = isatty(STDIN_FILENO);
  if (tty) std::fprintf(stderr, "kestrel chat: type a message; /help lists the commands, /exit or Ctrl-D quits.\n");
  // No SA_RESTART: Ctrl-C at the prompt interrupts the read, which ends the session.
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  struct sigaction previous {};
  sigaction(SIGINT, &sa, &previous);
  LineEditor input(STDIN_FILENO, STDERR_FILENO);  // editing and history on a terminal
  while (true) {
    g_interrupted = false;
    std::optional<std::string> got = input.read(tty ? "> " : "");
    if (!got || g_interrupted) break;
    std::string line = std::move(*got);
    if (line == "/exit" || line == "/quit") break;
    if (line == "/help" || line == "/?") {
      std::fprintf(stderr, "%s", kHelp);
      continue;
    }
    if (line == "/reset") {
      messages.erase(messages.begin() + (f.system.empty() ? 0 : 1), messages.end());
      session.truncate(0);
      continue;
    }
    if (line.starts_with("//")) {
      line.erase(0, 1);
    } else if (line.starts_with("/")) {
      std::fprintf(stderr, "kestrel: unknown command '%s' (/help lists them; '//' starts a message with '/')\n",
                   line.substr(0, line.find(' ')).c_str());
      continue;
    }
    if (line.empty()) continue;
    messages.push_back({{"role", "user"}, {"content", line}});
    const std::string text = fmt.render(messages, /*add_generation_prompt=*/true);
    const std::vector<int32_t> tokens = model->tokenizer->encode(text, false, true);
    if (static_cast<int>(tokens.size()) + 1 >= session.n_ctx()) {
      std::fprintf(stderr, "kestrel: the conversation no longer fits the %d-token context; use /reset\n",
                   session.n_ctx());
      messages.erase(messages.end() - 1);
      continue;
    }
    // Reuse the cached prefix; recompute at least the last token so there are logits to sample from.
    const int32_t keep = std::min<int32_t>(session.common_prefix(tokens), static_cast<int32_t>(tokens.size()) - 1);
    session.truncate(keep);
    GenerateOptions opt{.max_tokens = std::min(f.n_predict, session.n_ctx() - static_cast<int>(tokens.size())),
                        .cancel = &g_interrupted,
                        .constraint = constraint};
    GenerateResult r =
        generate(session, *model->tokenizer, f.sampling, std::span(tokens).subspan(keep), opt, [](std::string_view s) {
          std::fwrite(s.data(), 1, s.size(), stdout);
          std::fflush(stdout);
        });
    std::printf("\n");
    std::fflush(stdout);
    if (r.finish_reason == "cancelled") std::fprintf(stderr, "kestrel: stopped (Ctrl-C); the answer so far is kept\n");
    messages.push_back({{"role", "assistant"}, {"content", r.text}});
    if (f.model.verbose)
      std::fprintf(stderr, "kestrel: reused %d cached tokens, computed %zu, generated %zu\n", keep,
                   tokens.size() - keep, r.tokens.size());
  }
  sigaction(SIGINT, &previous, nullptr);
}

}  // namespace

void register_chat(CLI::App& app) {
  auto f = std::make_shared<ChatFlags>();
  CLI::App* cmd = app.add_subcommand("chat", "talk to a chat model interactively (reads lines from standard input)");
  cmd->add_option("--system", f->system, "system message");
  cmd->add_option("-n,--n-predict", f->n_predict, "maximum tokens per reply")->check(CLI::Range(1, 1 << 20));
  add_model_flags(*cmd, f->model);
  f->sampling_set = add_sampling_flags(*cmd, f->sampling);
  add_constraint_flags(*cmd, f->constraint);
  cmd->callback([f] { chat(*f); });
}

}  // namespace kestrel::cli
