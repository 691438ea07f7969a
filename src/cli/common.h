// Flags and helpers shared by the `kestrel` subcommands. Subcommands stay thin: parse flags, call the
// library, print.
#pragma once

#include <CLI/CLI.hpp>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/sampler.h"
#include "engine/session.h"
#include "model/model.h"
#include "ops/context.h"
#include "structured/grammar_matcher.h"

namespace kestrel::cli {

struct ModelFlags {
  std::string model;  // empty: the default model
  int threads = 0;    // 0: all cores
  int ctx_size = 0;   // 0: the model's (capped)
  int batch_size = 512;
  std::string device = "cpu";
  int n_gpu_layers = 0;               // llama.cpp's -ngl: above 0 selects the GPU unless --device says otherwise
  std::vector<std::string> variants;  // op=variant
  bool batch_invariant = false;       // ops::Context::batch_invariant
  bool dequantize = false;            // Decoder::set_dequantize_on_place
  std::string quantization;           // "fp8" or "int8": the blocks' float linears to W8A8 at load
  std::string kv_type;                // empty: f32 on the CPU, bf16 on CUDA
  std::string kv_calib;               // empty: the model's own SKVQ calibration file, when there is one
  bool verbose = false;
};

// ctx_flag: whether --ctx-size belongs to the model flags (perplexity uses it for its window).
void add_model_flags(CLI::App& app, ModelFlags& f, bool ctx_flag = true);
// The sampling flags a command line set; the rest take the model's defaults (fill_sampling_defaults).
struct SamplingOptions {
  CLI::Option *temperature = nullptr, *top_k = nullptr, *top_p = nullptr, *min_p = nullptr, *repeat = nullptr;
};
// with_seed: also -s/--seed (random unless given; not for serve, whose requests carry their own).
SamplingOptions add_sampling_flags(CLI::App& app, SamplingParams& p, bool with_seed = true);
// Fills what the command line left unset from the model's sampling defaults (engine/sampling_defaults.h);
// with -v, logs the policy that applied.
void fill_sampling_defaults(SamplingParams& p, const SamplingOptions& set, const Model& model);

// llama.cpp's grammar flags: --grammar, --grammar-file, -j/--json-schema, --json-schema-file.
struct ConstraintFlags {
  std::string grammar, grammar_file, json_schema, json_schema_file;
};
void add_constraint_flags(CLI::App& app, ConstraintFlags& f);
// The constraint the flags ask for over the model's vocabulary (null without one). Throws kestrel::Error
// for an unreadable file, two constraints at once, or a bad grammar or schema.
std::shared_ptr<structured::TokenConstraint> make_constraint(const ConstraintFlags& f, const Model& model);

// The model path the flags name (the default model when none; throws when that is missing).
std::string model_path(const ModelFlags& f);
// Applies --threads/--verbose, loads the model, builds the op context.
std::unique_ptr<Model> load(const ModelFlags& f);
ops::Context make_context(const ModelFlags& f);
SessionOptions session_options(const ModelFlags& f, const Model& model);

// A one-line progress bar on stderr (only when stderr is a terminal, or forced).
class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total);
  void update(int64_t done);
  void finish();

 private:
  std::string label_;
  int64_t total_;
  int last_percent_ = -1;
  bool tty_;
};

// Wall-clock seconds since an arbitrary epoch.
double now_seconds();

// Subcommand registration (one file each).
void register_run(CLI::App& app);
void register_chat(CLI::App& app);
void register_perplexity(CLI::App& app);
void register_tokenize(CLI::App& app);
void register_embed(CLI::App& app);
void register_classify(CLI::App& app);
void register_info(CLI::App& app);
void register_bench(CLI::App& app);
void register_serve(CLI::App& app);
void register_synth(CLI::App& app);
void register_quantize(CLI::App& app);

}  // namespace kestrel::cli
