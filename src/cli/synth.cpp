// `kestrel synth`: writes a random-weight Hugging Face model of a real model's shape (see model/synth.h).
#include "model/synth.h"

#include <cstdio>

#include "cli/common.h"
#include "core/error.h"

namespace kestrel::cli {
namespace {

struct SynthFlags {
  std::string preset;
  std::string out;
  uint64_t seed = 0;
  std::string dtype = "bf16";
  int threads = 0;
  int layers = 0;
  int sliding_window = -1;  // -1: the preset's
  bool list = false;
};

void list_presets() {
  std::printf("| preset | model_type | layers | hidden | ffn | heads/kv | head_dim | vocab | parameters |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (const SynthPreset& p : synth_presets()) {
    const int64_t q = int64_t{p.n_heads} * p.head_dim, kv = int64_t{p.n_kv_heads} * p.head_dim;
    const int64_t layer = p.hidden * (q + 2 * kv) + q * p.hidden + 3 * int64_t{p.hidden} * p.ffn;
    const int64_t params = p.n_layers * layer + int64_t{p.vocab} * p.hidden * (p.tied_embeddings ? 1 : 2);
    std::printf("| %s | %s | %d | %d | %d | %d/%d | %d | %d | %.2fB |\n", p.name.c_str(), p.model_type.c_str(),
                p.n_layers, p.hidden, p.ffn, p.n_heads, p.n_kv_heads, p.head_dim, p.vocab, params / 1e9);
  }
}

void synth(const SynthFlags& f) {
  if (f.list) return list_presets();
  KS_CHECK(!f.preset.empty() && !f.out.empty(), "synth needs --preset NAME and --out DIR (--list shows presets)");
  SynthPreset p = synth_preset(f.preset);
  // Fewer layers keep every width (and so every kernel shape) of the real model in a fraction of the bytes.
  if (f.layers > 0) p.n_layers = f.layers;
  if (f.sliding_window >= 0) {
    KS_CHECK(p.sliding_window > 0, "synth: --sliding-window needs a preset with sliding-window layers (gemma3-*)");
    p.sliding_window = f.sliding_window;
  }
  SynthOptions opt;
  opt.seed = f.seed;
  opt.dtype = f.dtype == "f32" ? DType::F32 : f.dtype == "f16" ? DType::F16 : DType::BF16;
  opt.threads = f.threads;
  ProgressBar bar(fmt::format("synth {}", p.name), 100);
  opt.progress = [&](uint64_t done, uint64_t total) {
    bar.update(total ? static_cast<int64_t>(100 * done / total) : 100);
  };
  const double t0 = now_seconds();
  const SynthSummary s = write_synth_model(p, f.out, opt);
  bar.finish();
  const double secs = now_seconds() - t0;
  std::printf("wrote %s: %s (%d layer%s), %.3fB parameters, %.2f GB in %d shard%s, %.1f s (%.2f GB/s)\n", f.out.c_str(),
              p.name.c_str(), p.n_layers, p.n_layers == 1 ? "" : "s", s.parameters / 1e9, s.tensor_bytes / 1e9,
              s.shards, s.shards == 1 ? "" : "s", secs, s.tensor_bytes / 1e9 / std::max(secs, 1e-9));
}

}  // namespace

void register_synth(CLI::App& app) {
  auto f = std::make_shared<SynthFlags>();
  CLI::App* cmd = app.add_subcommand(
      "synth", "write a random-weight Hugging Face model with a real model's shapes (for performance work)");
  cmd->add_option("--preset", f->preset,
                  "llama3-8b, llama3.2-1b, qwen2.5-7b, qwen3-8b, mistral-7b, gemma3-270m, tiny, small ... (--list)");
  cmd->add_option("-o,--out", f->out, "output directory");
  cmd->add_option("-s,--seed", f->seed, "random seed: the same seed writes the same weights");
  cmd->add_option("--dtype", f->dtype, "weight type")->check(CLI::IsMember({"bf16", "f16", "f32"}));
  cmd->add_option("-t,--threads", f->threads, "writer threads (default: all cores)")->check(CLI::Range(0, 1024));
  cmd->add_option("--layers", f->layers,
                  "decoder layers (default: the preset's); fewer keep the real widths in a smaller model, for tests")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--sliding-window", f->sliding_window,
                  "window of the sliding-window layers (gemma3 presets; default: the preset's); a short one makes a "
                  "short test prompt reach past it")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_flag("--list", f->list, "list the presets");
  cmd->callback([f] { synth(*f); });
}

}  // namespace kestrel::cli
