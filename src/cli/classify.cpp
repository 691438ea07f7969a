// `kestrel classify`: the multimodal sentiment classifier (docs/classifier.md) on text/image pairs,
// printing each pair's class probabilities as JSON.
#include <fmt/format.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string_view>

#include "cli/common.h"
#include "core/error.h"
#include "core/log.h"
#include "core/thread_pool.h"
#include "formats/pnm.h"
#include "model/sentiment_classifier.h"

namespace kestrel::cli {
namespace {

struct ClassifyFlags {
  std::string model;
  std::string encoder;
  std::vector<std::string> texts;
  std::vector<std::string> images;
  int threads = 0;
  std::vector<std::string> variants;
  bool verbose = false;
};

void classify(const ClassifyFlags& f) {
  if (f.verbose) log::set_level(log::Level::Debug);
  if (f.threads > 0) ThreadPool::set_default_threads(f.threads);
  KS_CHECK(!f.texts.empty() && f.texts.size() == f.images.size(),
           "classify takes text/image pairs: give --text and --image once per pair (got {} texts, {} images)",
           f.texts.size(), f.images.size());
  std::vector<RgbImage> images;
  for (const std::string& path : f.images) images.push_back(load_pnm(path));
  const std::unique_ptr<SentimentClassifier> model = load_sentiment_classifier(f.model, f.encoder);
  ModelFlags mf;
  mf.variants = f.variants;
  const ops::Context ctx = make_context(mf);
  const std::vector<std::string_view> views(f.texts.begin(), f.texts.end());
  const double t0 = now_seconds();
  const Tensor logits = model->logits(ctx, views, images);
  const double seconds = now_seconds() - t0;
  const std::vector<std::string>& classes = model->head->config().classes;
  const std::vector<std::vector<double>> probs = softmax_rows(logits);
  nlohmann::ordered_json out;
  out["model"] = f.model;
  out["classes"] = classes;
  out["results"] = nlohmann::ordered_json::array();
  for (size_t i = 0; i < probs.size(); ++i) {
    nlohmann::ordered_json r, p;
    size_t best = 0;
    for (size_t k = 0; k < classes.size(); ++k) {
      p[classes[k]] = probs[i][k];
      if (probs[i][k] > probs[i][best]) best = k;
    }
    r["index"] = i;
    r["label"] = classes[best];
    r["probabilities"] = p;
    r["logits"] =
        std::vector<float>(logits.ptr<float>() + i * classes.size(), logits.ptr<float>() + (i + 1) * classes.size());
    out["results"].push_back(r);
  }
  const std::string text = out.dump(2) + "\n";
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fprintf(stderr, "%zu pairs, %.1f ms\n", probs.size(), seconds * 1e3);
}

}  // namespace

void register_classify(CLI::App& app) {
  auto f = std::make_shared<ClassifyFlags>();
  CLI::App* cmd = app.add_subcommand(
      "classify",
      "multimodal sentiment of text/image pairs (docs/classifier.md): prints each pair's class probabilities as "
      "JSON. The model is a directory exported by scripts/train/sentiment/train.py (config.json, "
      "model.safetensors); its encoder (all-MiniLM-L6-v2) comes from --encoder, MODEL/encoder, or "
      "$KESTREL_CACHE/models/. Images are binary or ASCII PPM/PGM (P6, P3, P5, P2) of the model's size");
  cmd->add_option("-m,--model", f->model, "classifier directory")->required();
  cmd->add_option("--encoder", f->encoder, "encoder directory (default: MODEL/encoder, else the cache's)");
  cmd->add_option("--text", f->texts, "a pair's text (repeat with --image for several pairs)")->allow_extra_args(false);
  cmd->add_option("--image", f->images, "a pair's image, PPM/PGM (paired with the --text at the same position)")
      ->allow_extra_args(false);
  cmd->add_option("-t,--threads", f->threads, "CPU threads (default: all cores)")->check(CLI::Range(0, 1024));
  cmd->add_option("--variant", f->variants, "force an op implementation, e.g. --variant conv2d=cpu.ref")
      ->allow_extra_args(false);
  cmd->add_flag("-v,--verbose", f->verbose, "debug logging");
  cmd->callback([f] { classify(*f); });
}

}  // namespace kestrel::cli
