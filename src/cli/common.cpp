#include "cli/common.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include "backends/backends.h"
#include "core/error.h"
#include "core/log.h"
#include "core/thread_pool.h"
#include "engine/kv_calibration.h"
#include "engine/kv_format.h"
#include "engine/sampling_defaults.h"
#include "engine/structured_output.h"

namespace kestrel::cli {

void add_model_flags(CLI::App& app, ModelFlags& f, bool ctx_flag) {
  app.add_option("-m,--model", f.model,
                 "GGUF file or Hugging Face directory (default: SmolLM2-135M-Instruct from scripts/setup.sh, or "
                 "$KESTREL_MODEL)");
  app.add_option("-t,--threads", f.threads, "CPU threads (default: all cores)")->check(CLI::Range(0, 1024));
  if (ctx_flag)
    app.add_option("-c,--ctx-size,--max-model-len", f.ctx_size, "context size in tokens (0: the model's, at most 8192)")
        ->check(CLI::Range(0, 1 << 22));
  app.add_option("-b,--batch-size", f.batch_size, "prompt tokens per forward step")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 16));
  CLI::Option* device = app.add_option("--device", f.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--n-gpu-layers,--ngl", f.n_gpu_layers,
                 "llama.cpp's -ngl, accepted: above 0 runs the whole model on the GPU (--device cuda; Kestrel does "
                 "not split a model between devices); without a CUDA device it is ignored with a note")
      ->check(CLI::NonNegativeNumber);
  app.parse_complete_callback([&f, device] {
    if (f.n_gpu_layers <= 0 || device->count() > 0) return;
    if (backends::available(Device::Cuda))
      f.device = "cuda";
    else
      std::fprintf(stderr, "kestrel: note: -ngl %d: no CUDA device here, so the model runs on the CPU\n",
                   f.n_gpu_layers);
  });
  app.add_option("--variant", f.variants,
                 "force an op implementation for A/B runs, e.g. --variant matmul=cpu.ref (repeatable: one op=name "
                 "each); a variant that can't run a call falls back with a logged warning")
      ->allow_extra_args(false);
  app.add_flag("--batch-invariant", f.batch_invariant,
               "a request's result never depends on what it is batched with or how its prompt is chunked: only "
               "kernels with a fixed reduction order run (the CPU always works this way; on CUDA it costs some "
               "throughput, see BENCHMARKS.md)");
  app.add_flag("--dequantize", f.dequantize,
               "on CUDA, convert a model's quantized weights (GGUF blocks, GPTQ/AWQ grouped integers) to bf16 at "
               "load instead of running them in their own formats (about 3.5x the memory of Q4_K, 4x of 4-bit "
               "GPTQ; the baseline for A/B runs)");
  app.add_option("--quantization", f.quantization,
                 "quantize the blocks' float linear weights at load to W8A8, as vLLM's --quantization fp8: fp8 "
                 "(e4m3) or int8 weights with a scale per output channel, activations quantized per token as they "
                 "are multiplied (half the weight memory of bf16; on CUDA cuBLASLt's 8-bit GEMMs). The embedding "
                 "and the output projection stay as they are")
      ->check(CLI::IsMember({"fp8", "int8"}));
  app.add_option(
      "--kv-type", f.kv_type,
      "KV cache format: f32, f16, bf16; fp8 (e4m3, a scale per 64 elements: ~1.9x smaller than bf16), "
      "int8 (asymmetric, per 64: ~1.9x), int4 (asymmetric, per 32: 3.2x), int2 (asymmetric, per 32: "
      "5.3x); on the CPU also skvq (= skvq-k2v1.5: 2-bit keys, ternary values, per 64, reordered and clipped channels, "
      "5 sink and 128 recent tokens in f16: ~6.4x), skvq-k2v2, skvq-k4v4, kivi2 (2-bit keys per channel over 32 "
      "tokens, 2-bit values per 32 channels, 128 recent tokens in f16: ~5.3x; 32-token blocks), kivi4, and "
      "llama.cpp's q8_0, q4_0, q4_1, q5_0, q5_1 (default: f32 on the CPU, bf16 on CUDA; docs/kv_cache.md)");
  app.add_option("--kv-calib", f.kv_calib,
                 "the SKVQ calibration to use (default: MODEL.kv-calib.json when it exists; make one with "
                 "`kestrel quantize --kv skvq --calib TEXT -m MODEL`)");
  app.add_flag("-v,--verbose", f.verbose, "log loading and dispatch details");
}

void add_constraint_flags(CLI::App& app, ConstraintFlags& f) {
  app.add_option("--grammar", f.grammar,
                 "constrain the output to this GBNF grammar (llama.cpp's dialect; start rule root)");
  app.add_option("--grammar-file", f.grammar_file, "constrain the output to the GBNF grammar in this file");
  app.add_option("-j,--json-schema", f.json_schema, "constrain the output to JSON valid under this JSON Schema");
  app.add_option("--json-schema-file", f.json_schema_file, "constrain the output to the JSON Schema in this file");
}

std::shared_ptr<structured::TokenConstraint> make_constraint(const ConstraintFlags& f, const Model& model) {
  auto read = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    KS_CHECK(in.good(), "cannot read {}", path);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  };
  std::vector<ConstraintSpec> specs;
  if (!f.grammar.empty()) specs.push_back({ConstraintKind::Grammar, f.grammar});
  if (!f.grammar_file.empty()) specs.push_back({ConstraintKind::Grammar, read(f.grammar_file)});
  if (!f.json_schema.empty()) specs.push_back({ConstraintKind::JsonSchema, f.json_schema});
  if (!f.json_schema_file.empty()) specs.push_back({ConstraintKind::JsonSchema, read(f.json_schema_file)});
  if (specs.empty()) return nullptr;
  KS_CHECK(specs.size() == 1, "give one of --grammar, --grammar-file, --json-schema and --json-schema-file");
  ConstraintCompiler compiler(*model.tokenizer, static_cast<int32_t>(model.config().vocab));
  return compiler.compile(specs[0]);
}

SamplingOptions add_sampling_flags(CLI::App& app, SamplingParams& p, bool with_seed) {
  // The defaults are the model's (generation_config.json), else llama.cpp's: known after the load.
  SamplingOptions o;
  o.temperature = app.add_option("--temp,--temperature", p.temperature, "sampling temperature; 0 = greedy")
                      ->check(CLI::Range(0.0, 100.0))
                      ->default_str("the model's, else 0.8");
  o.top_k = app.add_option("--top-k", p.top_k, "keep the k most likely tokens (0 = off)")
                ->check(CLI::NonNegativeNumber)
                ->default_str("the model's, else 40");
  o.top_p = app.add_option("--top-p", p.top_p, "nucleus sampling threshold (1 = off)")
                ->check(CLI::Range(0.0, 1.0))
                ->default_str("the model's, else 0.95");
  o.min_p = app.add_option("--min-p", p.min_p, "drop tokens below min-p x the top probability (0 = off)")
                ->check(CLI::Range(0.0, 1.0))
                ->default_str("the model's, else 0.05");
  o.repeat = app.add_option("--repeat-penalty", p.repetition_penalty, "penalise recently seen tokens (1 = off)")
                 ->check(CLI::Range(0.0, 100.0))
                 ->default_str("the model's, else 1");
  app.add_option("--repeat-last-n", p.penalty_last_n, "window of the repeat penalty (-1 = all)");
  app.add_option("--presence-penalty", p.presence_penalty, "OpenAI-style presence penalty")
      ->check(CLI::Range(-2.0, 2.0));
  app.add_option("--frequency-penalty", p.frequency_penalty, "OpenAI-style frequency penalty")
      ->check(CLI::Range(-2.0, 2.0));
  if (!with_seed) return o;
  // Random unless given (as llama.cpp and vLLM do); commands print the seed so a run can be repeated.
  p.seed = std::random_device{}();
  app.add_option_function<int64_t>(
         "-s,--seed", [&p](int64_t v) { p.seed = v < 0 ? std::random_device{}() : static_cast<uint64_t>(v); },
         "random seed: the same seed gives the same text (default, or -1: a random one, printed)")
      ->default_str("-1");
  return o;
}

void fill_sampling_defaults(SamplingParams& p, const SamplingOptions& set, const Model& model) {
  const SamplingDefaults d = sampling_defaults(model);
  auto unset = [](const CLI::Option* o) { return o == nullptr || o->count() == 0; };
  if (unset(set.temperature)) p.temperature = d.params.temperature;
  if (unset(set.top_k)) p.top_k = d.params.top_k;
  if (unset(set.top_p)) p.top_p = d.params.top_p;
  if (unset(set.min_p)) p.min_p = d.params.min_p;
  if (unset(set.repeat)) p.repetition_penalty = d.params.repetition_penalty;
  log::info("sampling: {}; what the flags leave unset comes from {}", describe_sampling(p), d.source);
}

std::string model_path(const ModelFlags& f) {
  const std::string path = f.model.empty() ? default_model_path() : f.model;
  if (f.model.empty() && access(path.c_str(), R_OK) != 0)
    KS_FAIL("the default model is not at {}; run scripts/setup.sh to fetch it, or pass --model", path);
  return path;
}

std::unique_ptr<Model> load(const ModelFlags& f) {
  if (f.verbose) log::set_level(log::Level::Debug);
  if (f.threads > 0) ThreadPool::set_default_threads(f.threads);
  const std::string path = model_path(f);
  log::info("loading {}", path);
  auto model = load_model(path);
  model->decoder->set_dequantize_on_place(f.dequantize);
  if (!f.quantization.empty()) {
    const DType t = f.quantization == "fp8" ? DType::F8E4M3 : DType::I8;
    const int n = model->decoder->quantize_w8a8(t, ThreadPool::global());
    log::info("--quantization {}: {} linears converted to W8A8 ({})", f.quantization, n, dtype_name(t));
  }
  // A progress bar while the weights move to a device (drawn only when stderr is a terminal), in MiB.
  model->decoder->set_place_progress([bar = std::shared_ptr<ProgressBar>()](int64_t done, int64_t total) mutable {
    if (!bar) bar = std::make_shared<ProgressBar>("placing weights (MiB)", total >> 20);
    bar->update(done >> 20);
    if (done == total) bar->finish();
  });
  return model;
}

ops::Context make_context(const ModelFlags& f) {
  KS_CHECK(f.device == "cpu" || f.device == "cuda", "unknown device '{}' (cpu or cuda)", f.device);
  const Device device = f.device == "cuda" ? Device::Cuda : Device::Cpu;
  KS_CHECK(backends::available(device),
           "--device cuda: this build has no CUDA backend or no CUDA device is visible to this process");
  ops::Context ctx = backends::make_context(device);
  ctx.batch_invariant = f.batch_invariant;
  for (const std::string& v : f.variants) {
    const size_t eq = v.find('=');
    KS_CHECK(eq != std::string::npos && eq > 0 && eq + 1 < v.size(), "--variant expects op=name, got '{}'", v);
    ctx.forced[v.substr(0, eq)] = v.substr(eq + 1);
  }
  return ctx;
}

SessionOptions session_options(const ModelFlags& f, const Model& model) {
  SessionOptions o;
  o.n_ctx = f.ctx_size;
  o.n_batch = f.batch_size;
  const std::string name = !f.kv_type.empty() ? f.kv_type : f.device == "cuda" ? "bf16" : "f32";
  const std::optional<KvFormat> kv = kv_format_from_name(name);
  KS_CHECK(kv.has_value(), "unknown --kv-type '{}'; choose one of {}", name, kv_format_names());
  KS_CHECK(f.device != "cuda" || kv_format_on_cuda(*kv),
           "--kv-type {} runs on the CPU only; with --device cuda choose bf16, fp8, int8, int4 or int2", name);
  o.kv_format = with_kv_calibration(*kv, model.config(), model.path, f.kv_calib);
  return o;
}

ProgressBar::ProgressBar(std::string label, int64_t total)
    : label_(std::move(label)), total_(total), tty_(isatty(STDERR_FILENO)) {}

void ProgressBar::update(int64_t done) {
  const int pct = total_ > 0 ? static_cast<int>(100 * done / total_) : 100;
  if (pct == last_percent_) return;
  last_percent_ = pct;
  if (!tty_) return;
  constexpr int kWidth = 40;
  const int filled = pct * kWidth / 100;
  std::fprintf(stderr, "\r%s [%.*s%*s] %3d%% (%lld/%lld)", label_.c_str(), filled,
               "########################################", kWidth - filled, "", pct, static_cast<long long>(done),
               static_cast<long long>(total_));
  std::fflush(stderr);
}

void ProgressBar::finish() {
  if (tty_ && last_percent_ >= 0) std::fprintf(stderr, "\n");
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace kestrel::cli
