// `kestrel quantize`: a GGUF model to a smaller GGUF type or K-quant mix by round-to-nearest
// (llama-quantize's job), as `kestrel quantize IN.gguf OUT.gguf q4_k_m` or with --bits/--group/--sym;
// `kestrel quantize --method rtn|gptq|awq -m HF_DIR -o OUT_DIR`: a Hugging Face float model to a GPTQ
// checkpoint (engine/weight_quantize.h, model/gptq_checkpoint.h); `kestrel quantize --method gptq|awq -m
// F16.gguf -o OUT.gguf`: a float GGUF to the GGUF types that hold those codes (q4_0, q4_1, q8_0); and `kestrel quantize
// --kv skvq --calib TEXT -m MODEL`: the SKVQ calibration of the model's KV cache.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>

#include "cli/common.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "core/version.h"
#include "engine/kv_calibrate.h"
#include "engine/weight_quantize.h"
#include "model/gguf_quantize.h"
#include "model/gptq_checkpoint.h"
#include "model/model.h"

namespace kestrel::cli {
namespace {

constexpr const char* kTypes = "q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k_m, q5_k_m, q6_k";

struct QuantizeFlags {
  std::string in, out, type;
  std::optional<std::string> method;  // unset: rtn
  std::optional<int> bits, group;
  bool sym = false, act_order = false;
  double damp = 0.01;
  int threads = 0;
  std::string kv, calib;
  std::optional<int> calib_ctx;         // default: 2048 for --kv, 512 for weights
  std::optional<int64_t> calib_tokens;  // default: 32768 for --kv, 16384 for weights
};

// A progress bar drawn from the first report on (the total is known only then).
auto progress_bar(std::unique_ptr<ProgressBar>& bar, std::string label) {
  return [&bar, label = std::move(label)](int64_t done, int64_t total) {
    if (!bar) bar = std::make_unique<ProgressBar>(label, total);
    bar->update(done);
  };
}

// The calibration text's tokens, at most `cap` (0: all).
std::vector<int32_t> calibration_tokens(const std::string& path, const Tokenizer& tokenizer, int64_t cap) {
  std::ifstream in(path, std::ios::binary);
  KS_CHECK(in.good(), "cannot read '{}'", path);
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  std::vector<int32_t> tokens = tokenizer.encode(text, /*add_special=*/false, /*parse_special=*/false);
  KS_CHECK(!tokens.empty(), "'{}' has no text to calibrate on", path);
  if (cap > 0 && static_cast<int64_t>(tokens.size()) > cap) tokens.resize(cap);
  return tokens;
}

void calibrate_kv_cache(const QuantizeFlags& f) {
  KS_CHECK(f.kv == "skvq", "--kv {}: only skvq takes a calibration", f.kv);
  KS_CHECK(!f.calib.empty(), "--kv skvq needs --calib TEXT: a plain-text file like what the model will read");
  KS_CHECK(f.type.empty() && !f.bits.has_value(), "--kv calibrates the KV cache; it takes no weight type or --bits");
  KS_CHECK(!f.method && !f.act_order,
           "--kv calibrates the KV cache; --method and --act-order quantize weights: run them one at a time");
  const int calib_ctx = f.calib_ctx.value_or(2048);
  ModelFlags mf;
  mf.model = f.in;
  mf.threads = f.threads;
  mf.ctx_size = calib_ctx;
  mf.batch_size = calib_ctx;
  mf.kv_type = "f32";
  auto model = load(mf);
  const std::vector<int32_t> tokens = calibration_tokens(f.calib, *model->tokenizer, f.calib_tokens.value_or(32768));
  std::unique_ptr<ProgressBar> bar;
  const double t0 = now_seconds();
  KvCalibrationOptions opt;
  opt.n_ctx = calib_ctx;
  opt.search_tokens = std::min<int64_t>(static_cast<int64_t>(tokens.size()), 2 * int64_t{calib_ctx});
  const KvCalibration c =
      calibrate_kv(*model->decoder, make_context(mf), tokens, opt,
                   [draw = progress_bar(bar, "calibrate KV")](int done, int total) { draw(done, total); });
  if (bar) bar->finish();
  const std::string out = f.out.empty() ? kv_calibration_path(model->path) : f.out;
  save_kv_calibration(c, out);
  std::printf("wrote %s: channel orders of %d layers x %d kv heads, clip ratios for", out.c_str(), c.n_layers,
              c.n_kv_heads);
  for (const auto& [name, clips] : c.clips) {
    double k = 0, v = 0;
    for (const auto& kv : clips) k += kv[0], v += kv[1];
    std::printf(" %s (mean K %.3f, V %.3f)", name.c_str(), k / clips.size(), v / clips.size());
  }
  std::printf("; %lld tokens in %.1f s\n", static_cast<long long>(c.tokens), now_seconds() - t0);
}

WeightQuantMethod method_of(const std::string& name) {
  return name == "gptq" ? WeightQuantMethod::Gptq : name == "awq" ? WeightQuantMethod::Awq : WeightQuantMethod::Rtn;
}

// A float model quantized by --method, for either output.
struct MethodRun {
  std::string method;
  int bits = 4, group = 128;
  std::unique_ptr<Model> model;
  std::vector<int32_t> tokens;  // calibration
  WeightQuantOptions opt;
  QuantizedWeights q;
  double t0 = 0;  // when quantization began
};

// Checks the method's flags (`output` says what the output is, for the errors), loads the float model,
// tokenizes the calibration text and quantizes. `check_shape` sees every linear of the model first.
MethodRun run_method(const QuantizeFlags& f, int bits, int group, const char* output,
                     const std::function<void(const Linear&)>& check_shape) {
  MethodRun r;
  r.method = f.method.value_or("rtn");
  r.bits = bits;
  r.group = group;
  const bool calibrated = r.method != "rtn";
  KS_CHECK(!f.out.empty(), "quantize --method {} needs {}", r.method, output);
  KS_CHECK(group > 0 || group == -1, "--group {}: inputs per group must be positive, or -1 for one per output channel",
           group);
  KS_CHECK(!calibrated || !f.calib.empty(),
           "--method {} needs --calib TEXT: plain text like what the model will read (its activations choose the "
           "codes)",
           r.method);
  KS_CHECK(calibrated || f.calib.empty(),
           "--method rtn rounds each weight alone: it takes no --calib (gptq and awq do)");
  KS_CHECK(!f.act_order || r.method == "gptq",
           "--act-order is GPTQ's (desc_act): --method {} quantizes the input channels in order", r.method);
  KS_CHECK(!std::filesystem::exists(f.out) || !std::filesystem::equivalent(f.in, f.out),
           "the output must not be the input model");
  r.opt.method = method_of(r.method);
  r.opt.spec = {bits, group, f.sym};
  r.opt.gptq.damp = f.damp;
  r.opt.gptq.act_order = f.act_order;
  r.opt.n_ctx = f.calib_ctx.value_or(512);
  ModelFlags mf;
  mf.model = f.in;
  mf.threads = f.threads;
  r.model = load(mf);
  KS_CHECK(r.model->quantization.empty(), "'{}' is already quantized ({}); quantize a float model", f.in,
           r.model->quantization);
  for (const LayerWeights& L : r.model->decoder->weights().layers)
    for (const Linear* l : L.linears())
      if (!l->empty()) check_shape(*l);
  if (calibrated) r.tokens = calibration_tokens(f.calib, *r.model->tokenizer, f.calib_tokens.value_or(16384));
  std::unique_ptr<ProgressBar> bar;
  r.t0 = now_seconds();
  r.q = quantize_weights(*r.model->decoder, make_context(mf), r.tokens, r.opt,
                         progress_bar(bar, "quantize (" + r.method + ")"));
  if (bar) bar->finish();
  return r;
}

std::string describe_groups(const MethodRun& r, bool sym, bool act_order) {
  return fmt::format("{}{}{}", r.group > 0 ? fmt::format("groups of {}", r.group) : "one group per output channel",
                     sym ? ", symmetric" : "", act_order ? ", act-order" : "");
}

// A Hugging Face float model to a GPTQ checkpoint directory.
void quantize_hf(const QuantizeFlags& f) {
  KS_CHECK(f.type.empty(),
           "'{}' is a Hugging Face model: it is quantized with --method and --bits/--group into a GPTQ checkpoint, "
           "not to a GGUF type ('{}')",
           f.in, f.type);
  const int bits = f.bits.value_or(4);
  KS_CHECK(bits == 2 || bits == 3 || bits == 4 || bits == 8, "--bits {}: a GPTQ checkpoint holds 2, 3, 4 or 8 bits",
           bits);
  MethodRun r = run_method(f, bits, f.group.value_or(128), "an output directory (-o OUTDIR)",
                           [&](const Linear& l) { check_gptq_shape(l.in_features(), bits, l.id.name()); });
  const bool calibrated = r.method != "rtn";
  GptqCheckpoint c;
  c.linears = std::move(r.q.linears);
  c.replaced = std::move(r.q.folded);
  c.quantization_config = {{"quant_method", "gptq"},
                           {"bits", bits},
                           {"group_size", r.group},
                           {"desc_act", f.act_order},
                           {"sym", f.sym},
                           {"checkpoint_format", "gptq_v2"},
                           {"pack_dtype", "int32"},
                           {"damp_percent", f.damp},
                           {"static_groups", false},
                           {"true_sequential", false},
                           {"meta",
                            {{"quantizer", {fmt::format("kestrel:{}", kVersion)}},
                             {"method", r.method},
                             {"calibration_tokens", r.tokens.size()},
                             {"calibration_ctx", calibrated ? r.opt.n_ctx : 0}}}};
  const size_t n_linears = c.linears.size();
  write_gptq_checkpoint(c, r.model->decoder->architecture(), f.in, f.out);
  std::printf("wrote %s: %zu linears quantized by %s to %d bits, %s; %zu calibration tokens; %.1f s\n", f.out.c_str(),
              n_linears, r.method.c_str(), bits, describe_groups(r, f.sym, f.act_order).c_str(), r.tokens.size(),
              now_seconds() - r.t0);
}

// A float GGUF quantized by GPTQ or AWQ into the GGUF types that hold their codes (q4_0, q4_1, q8_0).
void quantize_gguf_calibrated(const QuantizeFlags& f) {
  KS_CHECK(f.type.empty(), "--method {} chooses the type from --bits, --group and --sym; drop the type '{}'", *f.method,
           f.type);
  KS_CHECK(!f.in.empty(), "quantize --method {} needs the float model to quantize (-m MODEL.gguf)", *f.method);
  const int bits = f.bits.value_or(4), group = f.group.value_or(32);
  const std::optional<DType> type = gguf_type_for({bits, group, f.sym});
  KS_CHECK(type.has_value() && !f.act_order,
           "--bits {} --group {}{}{}: no GGUF type holds those codes; a GGUF takes --bits 4 --group 32 (q4_1, or "
           "q4_0 with --sym) or --bits 8 --group 32 --sym (q8_0), without --act-order; other settings need a Hugging "
           "Face model as input (written as a GPTQ checkpoint)",
           bits, group, f.sym ? " --sym" : "", f.act_order ? " --act-order" : "");
  MethodRun r = run_method(f, bits, group, "an output file (-o OUT.gguf)", [&](const Linear& l) {
    KS_CHECK(l.in_features() % 32 == 0, "{}: {} inputs are no whole number of groups of 32", l.id.name(),
             l.in_features());
  });
  const std::map<std::string, GgufValue> metadata = {
      {"kestrel.quantize.method", GgufValue(GgufValue::Storage(r.method))},
      {"kestrel.quantize.calibration_tokens", GgufValue(GgufValue::Storage(static_cast<uint64_t>(r.tokens.size())))},
      {"kestrel.quantize.calibration_ctx", GgufValue(GgufValue::Storage(static_cast<uint32_t>(r.opt.n_ctx)))}};
  std::unique_ptr<ProgressBar> bar;
  const QuantizeSummary s =
      write_gguf_codes(f.in, f.out, r.q.linears, r.q.folded, metadata,
                       [draw = progress_bar(bar, "write")](size_t done, size_t total) { draw(done, total); });
  if (bar) bar->finish();
  std::printf(
      "wrote %s: %d linears quantized by %s to %s (%s), %d tensors copied, %zu replaced; %zu calibration "
      "tokens; %.2f GB -> %.2f GB in %.1f s\n",
      f.out.c_str(), s.quantized, r.method.c_str(), std::string(dtype_name(*type)).c_str(),
      describe_groups(r, f.sym, false).c_str(), s.copied, r.q.folded.size(), r.tokens.size(), s.bytes_in / 1e9,
      s.bytes_out / 1e9, now_seconds() - r.t0);
}

void quantize(const QuantizeFlags& f) {
  if (!f.kv.empty()) return calibrate_kv_cache(f);
  if (!f.in.empty() && std::filesystem::is_directory(f.in)) return quantize_hf(f);
  if (f.method.value_or("rtn") != "rtn") return quantize_gguf_calibrated(f);
  KS_CHECK(!f.act_order && f.calib.empty(), "--act-order and --calib are for --method gptq/awq");
  KS_CHECK(!f.in.empty() && !f.out.empty(), "quantize needs an input GGUF and an output path (see --help)");
  KS_CHECK(f.in != f.out, "the output must not be the input file");
  KS_CHECK(f.type.empty() != !f.bits.has_value(),
           "give the type (e.g. q4_k_m) or --bits (with --group and --sym), not both and not neither");
  QuantTarget target;
  if (!f.type.empty()) {
    const auto t = quant_target(f.type);
    KS_CHECK(t.has_value(), "unknown type '{}' ({})", f.type, kTypes);
    target = *t;
  } else {
    target = rtn_target(*f.bits, f.group.value_or(32), f.sym);
  }
  if (f.threads > 0) ThreadPool::set_default_threads(f.threads);
  std::unique_ptr<ProgressBar> bar;
  const double t0 = now_seconds();
  const QuantizeSummary s = quantize_gguf(
      f.in, f.out, target, [draw = progress_bar(bar, "quantize")](size_t done, size_t total) { draw(done, total); });
  if (bar) bar->finish();
  std::string types;
  for (const auto& [name, n] : s.by_type) types += fmt::format("{}{} {}", types.empty() ? "" : ", ", n, name);
  std::printf("wrote %s: %d tensors quantized (%s), %d copied; %.2f GB -> %.2f GB in %.1f s\n", f.out.c_str(),
              s.quantized, types.c_str(), s.copied, s.bytes_in / 1e9, s.bytes_out / 1e9, now_seconds() - t0);
}

}  // namespace

void register_quantize(CLI::App& app) {
  auto f = std::make_shared<QuantizeFlags>();
  CLI::App* cmd = app.add_subcommand(
      "quantize",
      "round a GGUF model's weights to a smaller GGUF type (q8_0, q4_0, q4_1, q5_0, q5_1) or a K-quant file (q2_k, "
      "q3_k, q4_k_m, q5_k_m, q6_k), like llama-quantize; quantize a Hugging Face float model (safetensors "
      "directory) into a GPTQ checkpoint by round to nearest, GPTQ or AWQ on the CPU: `kestrel quantize --method "
      "gptq --bits 4 --group 128 --calib TEXT -m MODEL_DIR -o OUT_DIR` (q/k/v/o/gate/up/down quantized, the "
      "embedding and output projection kept; GPTQ calibrates layer by layer, each layer's inputs coming from the "
      "layers before it already quantized; AWQ folds its scales into the norms, v's rows for o when there are "
      "as many kv heads as heads, and up's rows for down; docs/quantized_checkpoints.md); GPTQ or AWQ from a float "
      "GGUF into q4_0/q4_1/q8_0 GGUF blocks (`--method awq --bits 4 --group 32 --calib TEXT -m F16.gguf -o "
      "OUT.gguf`); or, with --kv skvq, calibrate a model's KV cache");
  cmd->add_option("input", f->in, "the model to quantize: a GGUF file, or a Hugging Face float model directory")
      ->check(CLI::ExistingPath);
  cmd->add_option("output", f->out,
                  "where to write: the quantized GGUF (written whole, then renamed into place), or the GPTQ "
                  "checkpoint directory");
  cmd->add_option("type", f->type,
                  "GGUF target: q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k_m, q5_k_m or q6_k (or use --bits)");
  cmd->add_option("-m,--model", f->in, "the input, as a flag (with --kv: any model; default: the default model)")
      ->check(CLI::ExistingPath);
  cmd->add_option("-o,--out", f->out, "the output, as a flag");
  cmd->add_option(
         "--method", f->method,
         "rtn: round to nearest (GGUF or Hugging Face input); gptq, awq: calibrated (needs --calib): a Hugging "
         "Face input is written as a GPTQ checkpoint (checkpoint_format gptq_v2), a float GGUF as a GGUF "
         "of q4_1 (--bits 4 --group 32), q4_0 (with --sym) or q8_0 (--bits 8 --group 32 --sym). Default "
         "rtn")
      ->check(CLI::IsMember({"rtn", "gptq", "awq"}));
  cmd->add_option("--bits", f->bits,
                  "bits per weight. GGUF: 8 (q8_0), 4 (q4_0/q4_1) or 5 (q5_0/q5_1); GPTQ checkpoint: 2, 3, 4 "
                  "(default) or 8")
      ->check(CLI::IsMember({2, 3, 4, 5, 8}));
  cmd->add_option("--group", f->group,
                  "weights per scale. GGUF: 32 (the only group its types above have; the default); GPTQ checkpoint: "
                  "32, 64, 128 (default) ..., or -1 for one group per output channel");
  cmd->add_flag("--sym", f->sym,
                "symmetric (no zero point per group): q4_0/q5_0/q8_0 rather than q4_1/q5_1; GPTQ: sym: true");
  cmd->add_flag("--act-order", f->act_order,
                "--method gptq: quantize input channels in order of decreasing activation energy (desc_act: true, "
                "with g_idx)");
  cmd->add_option("--damp", f->damp, "--method gptq: damping added to the Hessian's diagonal, times its mean")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("-t,--threads", f->threads, "threads (default: all cores)")->check(CLI::Range(0, 1024));
  cmd->add_option("--kv", f->kv,
                  "calibrate the KV cache instead: `--kv skvq --calib TEXT -m MODEL` writes SKVQ's channel orders "
                  "and clip ratios beside the model (MODEL.kv-calib.json, or -o), used by --kv-type skvq*")
      ->check(CLI::IsMember({"skvq"}));
  cmd->add_option("--calib", f->calib,
                  "calibration text (plain text) for --method gptq/awq and --kv; keep it apart from the text you "
                  "evaluate on")
      ->check(CLI::ExistingFile);
  cmd->add_option("--calib-ctx", f->calib_ctx, "tokens per calibration window (default 512; with --kv 2048)")
      ->check(CLI::Range(16, 1 << 16));
  cmd->add_option("--calib-tokens", f->calib_tokens,
                  "calibrate on at most this many tokens of the text, 0: all (default 16384; with --kv 32768)")
      ->check(CLI::NonNegativeNumber);
  cmd->callback([f] { quantize(*f); });
}

}  // namespace kestrel::cli
