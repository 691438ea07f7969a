// `kestrel`: one binary, one subcommand per job. Errors print one clear line and exit non-zero.
#include <cstdio>
#include <exception>

#include "cli/common.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"Kestrel: run and serve large language models on CPUs and GPUs"};
  app.require_subcommand(1);
  app.fallthrough();
  kestrel::cli::register_run(app);
  kestrel::cli::register_chat(app);
  kestrel::cli::register_perplexity(app);
  kestrel::cli::register_tokenize(app);
  kestrel::cli::register_info(app);
  kestrel::cli::register_bench(app);
  kestrel::cli::register_synth(app);
  kestrel::cli::register_serve(app);
  try {
    app.parse(argc, argv);
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
