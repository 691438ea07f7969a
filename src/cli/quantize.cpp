// `kestrel quantize`: a GGUF model to a smaller GGUF type or K-quant mix by round-to-nearest
// (llama-quantize's job), as `kestrel quantize IN.gguf OUT.gguf q4_k_m` or with --bits/--group/--sym.
#include <cstdio>
#include <optional>

#include "cli/common.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "model/gguf_quantize.h"

namespace kestrel::cli {
namespace {

constexpr const char* kTypes = "q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k_m, q5_k_m, q6_k";

struct QuantizeFlags {
  std::string in, out, type;
  std::string method = "rtn";
  std::optional<int> bits, group;
  bool sym = false;
  int threads = 0;
};

void quantize(const QuantizeFlags& f) {
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
                         "K-quant file (q2_k, q3_k, q4_k_m, q5_k_m, q6_k), like llama-quantize");
  cmd->add_option("input", f->in, "the GGUF model to quantize (any type Kestrel reads)")->check(CLI::ExistingFile);
  cmd->add_option("output", f->out, "where to write the quantized GGUF (written whole, then renamed into place)");
  cmd->add_option("type", f->type,
                  "target: q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k_m, q5_k_m or q6_k (or use --bits)");
  cmd->add_option("-m,--model", f->in, "the input, as a flag")->check(CLI::ExistingFile);
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
  cmd->callback([f] { quantize(*f); });
}

}  // namespace kestrel::cli
