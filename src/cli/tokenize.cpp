// `kestrel tokenize`: text to token ids (and pieces), using only the tokenizer.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>

#include "cli/common.h"
#include "core/error.h"
#include "core/log.h"
#include "tokenizer/tokenizer_file.h"

namespace kestrel::cli {
namespace {

struct TokenizeFlags {
  ModelFlags model;
  std::string text;
  std::string file;
  bool no_special = false;
  bool no_parse_special = false;
  bool pieces = false;
};

void tokenize(const TokenizeFlags& f) {
  // Only the tokenizer is loaded, so encoder models (BERT) and bare tokenizer.json files work too.
  if (f.model.verbose) log::set_level(log::Level::Debug);
  const std::unique_ptr<Tokenizer> tokenizer = load_tokenizer(model_path(f.model));
  std::string text = f.text;
  if (!f.file.empty()) {
    std::ifstream in(f.file, std::ios::binary);
    KS_CHECK(in.good(), "cannot read '{}'", f.file);
    text.assign(std::istreambuf_iterator<char>(in), {});
  } else if (text.empty() || text == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), {});
  }
  const auto ids = tokenizer->encode(text, !f.no_special, !f.no_parse_special);
  if (f.pieces) {
    for (int32_t id : ids) {
      const std::string piece = tokenizer->decode(std::span(&id, 1));
      std::printf("%6d  '%s'\n", id, piece.c_str());
    }
  } else {
    std::string out = "[";
    for (size_t i = 0; i < ids.size(); ++i) out += (i ? ", " : "") + std::to_string(ids[i]);
    std::printf("%s]\n", out.c_str());
  }
  std::fprintf(stderr, "%zu tokens\n", ids.size());
}

}  // namespace

void register_tokenize(CLI::App& app) {
  auto f = std::make_shared<TokenizeFlags>();
  CLI::App* cmd = app.add_subcommand("tokenize", "print the token ids of a text");
  cmd->add_option("text", f->text, "text to tokenize (\"-\" or nothing: standard input)");
  cmd->add_option("-f,--file", f->file, "read the text from this file");
  cmd->add_flag("--no-bos", f->no_special, "don't add BOS/EOS (or [CLS]/[SEP]) even if the model normally does");
  cmd->add_flag("--no-parse-special", f->no_parse_special, "treat special-token text like <|im_start|> as plain text");
  cmd->add_flag("--pieces", f->pieces, "print one token per line with its text");
  // -m also takes a tokenizer.json file or an encoder model's directory.
  add_model_flags(*cmd, f->model);
  cmd->callback([f] { tokenize(*f); });
}

}  // namespace kestrel::cli
