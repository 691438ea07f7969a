// `kestrel quantize`: a GGUF model to a smaller GGUF type or K-quant mix by round-to-nearest
// (llama-quantize's job), as `kestrel quantize IN.gguf OUT.gguf q4_k_m` or with --bits/--group/--sym; and
// `kestrel quantize --kv skvq --calib TEXT -m MODEL`: the SKVQ calibration of the model's KV cache.
#include <cstdio>
#include <fstream>
#include <iterator>
#include <optional>

#include "cli/common.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "engine/kv_calibrate.h"
#include "model/gguf_quantize.h"
#include "model/model.h"

namespace kestrel::cli {
namespace {

constexpr const char* kTypes = "q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k_m, q5_k_m, q6_k";

struct QuantizeFlags {
  std::string in, out, type;
  std::string method = "rtn";
  std::optional<int> bits, group;
  bool sym = false;
  int threads = 0;
  std::string kv, calib;
  int calib_ctx = 2048;
  int64_t calib_tokens = 32768;
};

void calibrate_kv_cache(const QuantizeFlags& f) {
  KS_CHECK(f.kv == "skvq", "--kv {}: only skvq takes a calibration", f.kv);
  KS_CHECK(!f.calib.empty(), "--kv skvq needs --calib TEXT: a plain-text file like what the model will read");
  KS_CHECK(f.type.empty() && !f.bits.has_value(), "--kv calibrates the KV cache; it takes no weight type or --bits");
  std::ifstream in(f.calib, std::ios::binary);
  KS_CHECK(in.good(), "cannot read '{}'", f.calib);
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  ModelFlags mf;
  mf.model = f.in;
  mf.threads = f.threads;
  mf.ctx_size = f.calib_ctx;
  mf.batch_size = f.calib_ctx;
  mf.kv_type = "f32";
  auto model = load(mf);
  std::vector<int32_t> tokens = model->tokenizer->encode(text, /*add_special=*/false, /*parse_special=*/false);
  KS_CHECK(!tokens.empty(), "'{}' has no text to calibrate on", f.calib);
  if (f.calib_tokens > 0 && static_cast<int64_t>(tokens.size()) > f.calib_tokens) tokens.resize(f.calib_tokens);
  std::unique_ptr<ProgressBar> bar;
  const double t0 = now_seconds();
  KvCalibrationOptions opt;
  opt.n_ctx = f.calib_ctx;
  opt.search_tokens = std::min<int64_t>(static_cast<int64_t>(tokens.size()), 2 * int64_t{f.calib_ctx});
  const KvCalibration c = calibrate_kv(*model->decoder, make_context(mf), tokens, opt, [&](int done, int total) {
    if (!bar) bar = std::make_unique<ProgressBar>("calibrate KV", total);
    bar->update(done);
  });
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

void quantize(const QuantizeFlags& f) {
  if (!f.kv.empty()) return calibrate_kv_cache(f);
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
  const QuantizeSummary s = quantize_gguf(f.in, f.out, target, [&](size_t done, size_t total) {
    if (!bar) bar = std::make_unique<ProgressBar>("quantize", total);
    bar->update(static_cast<int64_t>(done));
  });
  if (bar) bar->finish();
  std::string types;
  for (const auto& [name, n] : s.by_type) types += fmt::format("{}{} {}", types.empty() ? "" : ", ", n, name);
  std::printf("wrote %s: %d tensors quantized (%s), %d copied; %.2f GB -> %.2f GB in %.1f s\n", f.out.c_str(),
              s.quantized, types.c_str(), s.copied, s.bytes_in / 1e9, s.bytes_out / 1e9, now_seconds() - t0);
}

}  // namespace

void register_quantize(CLI::App& app) {
  auto f = std::make_shared<QuantizeFlags>();
  CLI::App* cmd =
      app.add_subcommand("quantize",
                         "round a GGUF model's weights to a smaller GGUF type (q8_0, q4_0, q4_1, q5_0, q5_1) or a "
                         "K-quant file (q2_k, q3_k, q4_k_m, q5_k_m, q6_k), like llama-quantize; or, with --kv skvq, "
                         "calibrate a model's KV cache");
  cmd->add_option("input", f->in, "the GGUF model to quantize (any type Kestrel reads)")->check(CLI::ExistingPath);
  cmd->add_option("output", f->out, "where to write the quantized GGUF (written whole, then renamed into place)");
  cmd->add_option("type", f->type,
                  "target: q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k_m, q5_k_m or q6_k (or use --bits)");
  cmd->add_option("-m,--model", f->in, "the input, as a flag (with --kv: any model; default: the default model)")
      ->check(CLI::ExistingPath);
  cmd->add_option("-o,--out", f->out, "the output, as a flag");
  cmd->add_option("--method", f->method, "rounding method (rtn: round to nearest)")
      ->check(CLI::IsMember({"rtn"}))
      ->capture_default_str();
  cmd->add_option("--bits", f->bits, "bits per weight: 8 (q8_0), 4 (q4_0/q4_1) or 5 (q5_0/q5_1)")
      ->check(CLI::IsMember({4, 5, 8}));
  cmd->add_option("--group", f->group, "weights per scale (32, the only group the GGUF types above have)")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--sym", f->sym, "symmetric (no minimum per group): q4_0/q5_0/q8_0 rather than q4_1/q5_1");
  cmd->add_option("-t,--threads", f->threads, "threads (default: all cores)")->check(CLI::Range(0, 1024));
  cmd->add_option("--kv", f->kv,
                  "calibrate the KV cache instead: `--kv skvq --calib TEXT -m MODEL` writes SKVQ's channel orders "
                  "and clip ratios beside the model (MODEL.kv-calib.json, or -o), used by --kv-type skvq*")
      ->check(CLI::IsMember({"skvq"}));
  cmd->add_option("--calib", f->calib, "with --kv: the calibration text (plain text)")->check(CLI::ExistingFile);
  cmd->add_option("--calib-ctx", f->calib_ctx, "with --kv: tokens per calibration window")
      ->check(CLI::Range(16, 1 << 16))
      ->capture_default_str();
  cmd->add_option("--calib-tokens", f->calib_tokens, "with --kv: calibrate on at most this many tokens (0: all)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->callback([f] { quantize(*f); });
}

}  // namespace kestrel::cli
