// `kestrel embed`: sentence embeddings from an encoder model (BERT family, sentence-transformers layout),
// printed as JSON in the shape of OpenAI's embeddings response.
#include <cstdio>
#include <fstream>
#include <string_view>

#include "cli/common.h"
#include "core/error.h"
#include "core/log.h"
#include "core/thread_pool.h"
#include "model/encoder.h"
#include "server/embeddings_api.h"

namespace kestrel::cli {
namespace {

struct EmbedFlags {
  std::string model;
  std::vector<std::string> texts;
  std::string file;
  int threads = 0;
  std::vector<std::string> variants;
  bool verbose = false;
};

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  KS_CHECK(in.good(), "cannot read '{}'", path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
  }
  return lines;
}

void embed(const EmbedFlags& f) {
  if (f.verbose) log::set_level(log::Level::Debug);
  if (f.threads > 0) ThreadPool::set_default_threads(f.threads);
  std::vector<std::string> texts = f.texts;
  if (!f.file.empty())
    for (std::string& line : read_lines(f.file)) texts.push_back(std::move(line));
  KS_CHECK(!texts.empty(), "nothing to embed: give texts as arguments or --file with one text per line");
  const std::unique_ptr<EmbeddingModel> model = load_embedding_model(f.model);
  ModelFlags mf;
  mf.variants = f.variants;
  const ops::Context ctx = make_context(mf);
  const std::vector<std::string_view> views(texts.begin(), texts.end());
  const double t0 = now_seconds();
  const std::vector<EncoderInput> inputs = model->encode(views);
  const std::vector<std::vector<float>> vectors = model->embed(ctx, inputs);
  const double seconds = now_seconds() - t0;
  int64_t tokens = 0;
  for (const EncoderInput& in : inputs) tokens += static_cast<int64_t>(in.ids.size());
  // The server's encoding of the response, so `kestrel embed` and /v1/embeddings print the same floats.
  const std::string out = server::embeddings_response(vectors, /*base64=*/false, f.model, tokens) + "\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fprintf(stderr, "%zu texts, %zu dimensions, %.1f ms (%.1f embeddings/s)\n", vectors.size(),
               vectors.empty() ? size_t{0} : vectors[0].size(), seconds * 1e3, vectors.size() / seconds);
}

}  // namespace

void register_embed(CLI::App& app) {
  auto f = std::make_shared<EmbedFlags>();
  CLI::App* cmd = app.add_subcommand(
      "embed",
      "print sentence embeddings of texts as JSON (OpenAI's embeddings response). The model is a directory of a "
      "BERT-family encoder: config.json, model.safetensors, tokenizer.json, and sentence-transformers' "
      "modules.json / 1_Pooling/config.json / sentence_bert_config.json when present (pooling: mean or CLS, "
      "normalization, max_seq_length; without them: mean pooling, unnormalized). All texts run as one batch");
  cmd->add_option("-m,--model", f->model, "encoder model directory (e.g. all-MiniLM-L6-v2)")->required();
  cmd->add_option("texts", f->texts, "texts to embed, one embedding each");
  cmd->add_option("-f,--file", f->file, "also embed each line of this file (after the arguments' texts)");
  cmd->add_option("-t,--threads", f->threads, "CPU threads (default: all cores)")->check(CLI::Range(0, 1024));
  cmd->add_option("--variant", f->variants, "force an op implementation, e.g. --variant encoder_attention=cpu.ref")
      ->allow_extra_args(false);
  cmd->add_flag("-v,--verbose", f->verbose, "debug logging");
  cmd->callback([f] { embed(*f); });
}

}  // namespace kestrel::cli
