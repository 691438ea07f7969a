// `kestrel embed`: sentence embeddings from an encoder model (BERT family, sentence-transformers layout),
// printed as JSON in the shape of OpenAI's embeddings response.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <span>
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
  std::string device = "cpu";
  int batch = 0;   // texts a forward; 0: all at once
  int repeat = 1;  // timed passes over the texts (throughput runs); the output is the last pass's
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
  mf.device = f.device;
  mf.variants = f.variants;
  const ops::Context ctx = make_context(mf);
  model->encoder->place_on(ctx);
  const std::vector<std::string_view> views(texts.begin(), texts.end());
  const size_t batch = f.batch > 0 ? static_cast<size_t>(f.batch) : views.size();
  std::vector<std::vector<float>> vectors;
  int64_t tokens = 0;
  double best = 0, total = 0;
  for (int r = 0; r < f.repeat; ++r) {
    vectors.clear();
    tokens = 0;
    const double t0 = now_seconds();
    for (size_t b = 0; b < views.size(); b += batch) {
      const std::span<const std::string_view> part(views.data() + b, std::min(batch, views.size() - b));
      const std::vector<EncoderInput> inputs = model->encode(part);
      for (const EncoderInput& in : inputs) tokens += static_cast<int64_t>(in.ids.size());
      for (std::vector<float>& v : model->embed(ctx, inputs)) vectors.push_back(std::move(v));
    }
    const double s = now_seconds() - t0;
    total += s;
    best = r == 0 ? s : std::min(best, s);
  }
  const double seconds = best;
  // The server's encoding of the response, so `kestrel embed` and /v1/embeddings print the same floats.
  const std::string out = server::embeddings_response(vectors, /*base64=*/false, f.model, tokens) + "\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fprintf(stderr, "%zu texts in batches of %zu, %zu dimensions, %s: %.1f ms (%.1f embeddings/s)", vectors.size(),
               batch, vectors.empty() ? size_t{0} : vectors[0].size(), f.device.c_str(), seconds * 1e3,
               vectors.size() / seconds);
  if (f.repeat > 1)
    std::fprintf(stderr, ", best of %d passes (mean %.1f embeddings/s)", f.repeat, vectors.size() * f.repeat / total);
  std::fprintf(stderr, "\n");
}

}  // namespace

void register_embed(CLI::App& app) {
  auto f = std::make_shared<EmbedFlags>();
  CLI::App* cmd = app.add_subcommand(
      "embed",
      "print sentence embeddings of texts as JSON (OpenAI's embeddings response). The model is a directory of a "
      "BERT-family encoder: config.json, model.safetensors, tokenizer.json, and sentence-transformers' "
      "modules.json / 1_Pooling/config.json / sentence_bert_config.json when present (pooling: mean or CLS, "
      "normalization, max_seq_length; without them: mean pooling, unnormalized). All texts run as one batch "
      "unless --batch-size says otherwise");
  cmd->add_option("-m,--model", f->model, "encoder model directory (e.g. all-MiniLM-L6-v2)")->required();
  cmd->add_option("texts", f->texts, "texts to embed, one embedding each");
  cmd->add_option("-f,--file", f->file, "also embed each line of this file (after the arguments' texts)");
  cmd->add_option("-t,--threads", f->threads, "CPU threads (default: all cores)")->check(CLI::Range(0, 1024));
  cmd->add_option("--device", f->device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("-b,--batch-size", f->batch, "texts a forward pass (default: all of them in one)")
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--repeat", f->repeat,
                  "embed the texts this many times and report the fastest pass (throughput runs; the output is "
                  "printed once)")
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--variant", f->variants, "force an op implementation, e.g. --variant encoder_attention=cpu.ref")
      ->allow_extra_args(false);
  cmd->add_flag("-v,--verbose", f->verbose, "debug logging");
  cmd->callback([f] { embed(*f); });
}

}  // namespace kestrel::cli
