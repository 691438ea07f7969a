// `kestrel`: one binary, one subcommand per job. Errors print one clear line and exit non-zero.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "cli/common.h"
#include "cli/suggest.h"
#include "core/error.h"
#include "core/version.h"

namespace {

// llama.cpp spellings CLI11 cannot declare (several letters after one dash) become Kestrel's.
std::vector<std::string> translate_aliases(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  for (std::string& a : args)
    if (a == "-ngl")
      a = "--n-gpu-layers";
    else if (a == "-np")
      a = "--parallel";
  return args;
}

std::vector<std::string> command_names(CLI::App& app) {
  std::vector<std::string> names;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; }))
    names.push_back(sub->get_name());
  return names;
}

std::vector<std::string> option_names(const CLI::App& app) {
  std::vector<std::string> names;
  for (const CLI::Option* o : app.get_options()) {
    for (const std::string& n : o->get_lnames()) names.push_back("--" + n);
    for (const std::string& n : o->get_snames()) names.push_back("-" + n);
  }
  return names;
}

int unknown_command(CLI::App& app, const std::string& word) {
  const std::vector<std::string> names = command_names(app);
  const std::string guess = kestrel::cli::closest_name(word, names);
  std::string list;
  for (const std::string& n : names) list += (list.empty() ? "" : ", ") + n;
  std::fprintf(stderr, "kestrel: error: unknown command '%s'%s; the commands are %s (kestrel --help)\n", word.c_str(),
               guess.empty() ? "" : (" (did you mean '" + guess + "'?)").c_str(), list.c_str());
  return 1;
}

// After CLI11's own message for arguments it did not expect: the closest option of the command for each
// one that looks like a mistyped option.
void suggest_options(CLI::App& app, const std::vector<std::string>& args) {
  if (args.empty()) return;
  CLI::App* cmd = nullptr;
  for (CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; }))
    if (sub->get_name() == args[0]) cmd = sub;
  if (!cmd) return;
  std::vector<std::string> known = option_names(*cmd);
  for (const std::string& n : option_names(app)) known.push_back(n);
  for (const std::string& a : args) {
    if (a.size() < 2 || a[0] != '-' || (a[1] >= '0' && a[1] <= '9')) continue;
    const std::string name = a.substr(0, a.find('='));
    if (std::find(known.begin(), known.end(), name) != known.end()) continue;
    const std::string guess = kestrel::cli::closest_name(name, known);
    if (!guess.empty()) std::fprintf(stderr, "kestrel: '%s': did you mean '%s'?\n", name.c_str(), guess.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Kestrel: run and serve large language models on CPUs and GPUs"};
  app.option_defaults()->always_capture_default();  // --help shows every default
  app.set_version_flag("--version", std::string("kestrel ") + kestrel::kVersion);
  app.require_subcommand(1);
  app.fallthrough();
  kestrel::cli::register_run(app);
  kestrel::cli::register_chat(app);
  kestrel::cli::register_perplexity(app);
  kestrel::cli::register_tokenize(app);
  kestrel::cli::register_embed(app);
  kestrel::cli::register_classify(app);
  kestrel::cli::register_info(app);
  kestrel::cli::register_bench(app);
  kestrel::cli::register_synth(app);
  kestrel::cli::register_quantize(app);
  kestrel::cli::register_serve(app);
  const std::vector<std::string> args = translate_aliases(argc, argv);
  if (!args.empty() && !args[0].empty() && args[0][0] != '-') {
    const std::vector<std::string> names = command_names(app);
    if (std::find(names.begin(), names.end(), args[0]) == names.end()) return unknown_command(app, args[0]);
  }
  try {
    std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes a vector last-first
    app.parse(reversed);
  } catch (const CLI::ExtrasError& e) {
    const int rc = app.exit(e);
    suggest_options(app, args);
    return rc;
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const kestrel::Error& e) {
    std::fprintf(stderr, "kestrel: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kestrel: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
