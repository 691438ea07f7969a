// `kestrel info`: what a model file holds — architecture, sizes, tensor types, tokenizer, template.
#include <cstdio>
#include <map>

#include "cli/common.h"
#include "formats/gguf.h"

namespace kestrel::cli {
namespace {

struct InfoFlags {
  ModelFlags model;
  bool tensors = false;
};

void info(const InfoFlags& f) {
  auto model = load(f.model);
  const ModelConfig& c = model->config();
  const DecoderWeights& w = model->decoder->weights();
  std::printf("model         %s\n", model->path.c_str());
  std::printf("format        %s\n", model->format.c_str());
  if (!model->quantization.empty()) std::printf("quantization  %s\n", model->quantization.c_str());
  if (!c.name.empty()) std::printf("name          %s\n", c.name.c_str());
  std::printf("architecture  %s\n", c.arch.c_str());
  std::printf("layers        %d\n", c.n_layers);
  std::printf("hidden        %d\n", c.hidden);
  std::printf("ffn           %d\n", c.ffn);
  std::printf("heads         %d (kv %d, head dim %d)\n", c.n_heads, c.n_kv_heads, c.head_dim);
  std::printf("vocab         %d\n", c.vocab);
  std::printf("context       %d\n", c.max_ctx);
  std::printf("rope          %s, dim %d, base %g%s\n",
              c.rope.style == ops::RopeParams::Style::Adjacent ? "adjacent pairs" : "half split", c.rope.rot_dim,
              c.rope.theta,
              c.rope.llama3_factor > 0 || !c.rope.freq_factors.empty() ? ", llama3 scaling"
              : c.rope.linear_factor != 1.f                            ? ", linear scaling"
                                                                       : "");
  std::printf("rms eps       %g\n", c.rms_eps);
  std::printf("tied embed    %s\n", c.tied_embeddings ? "yes" : "no");
  if (c.has_sliding_layers()) {
    int n = 0;
    for (int l = 0; l < c.n_layers; ++l) n += c.is_sliding(l);
    std::printf("sliding       window %d on %d of %d layers (their RoPE base %g)\n", c.sliding_window, n, c.n_layers,
                c.rope_local.theta);
  }
  if (c.post_norms || c.gelu)
    std::printf("block         %s MLP%s%s\n", c.gelu ? "GeGLU" : "SwiGLU", c.post_norms ? ", post-norms" : "",
                c.embed_scale != 1.f ? ", scaled embeddings" : "");

  std::map<std::string, std::pair<int, size_t>> by_type;
  size_t total = 0;
  int64_t params = 0;
  w.for_each_tensor([&](const Tensor& t) {
    auto& e = by_type[std::string(dtype_name(t.dtype))];
    e.first += 1;
    e.second += t.nbytes();
    total += t.nbytes();
    params += t.numel();
  });
  std::printf("tensors by type (as used for compute):\n");
  for (const auto& [type, e] : by_type)
    std::printf("  %-6s %4d tensors %10.2f MiB\n", type.c_str(), e.first, e.second / 1048576.0);
  std::printf("parameters    %.1f M\n", params / 1e6);
  std::printf("weight bytes  %.2f MiB (%.2f bits/parameter)\n", total / 1048576.0, 8.0 * total / params);
  const Tokenizer& tok = *model->tokenizer;
  std::printf("tokenizer     %s, %d tokens, bos %d, eos %d, add_bos %s\n",
              tok.spec().model == TokenizerModel::byte_level_bpe ? "byte-level BPE" : "SentencePiece BPE",
              tok.vocab_size(), tok.bos_id(), tok.eos_id(), tok.add_bos() ? "yes" : "no");
  std::printf("chat template %s\n", model->chat_template.empty() ? "none" : "yes");
  if (f.tensors && model->gguf) {
    std::printf("GGUF v%u, %zu metadata keys, %zu tensors:\n", model->gguf->version(), model->gguf->metadata().size(),
                model->gguf->tensors().size());
    for (const auto& t : model->gguf->tensors()) {
      std::string shape;
      for (size_t i = 0; i < t.shape.size(); ++i) shape += (i ? " x " : "") + std::to_string(t.shape[i]);
      std::printf("  %-32s %-6s %s\n", t.name.c_str(), t.type_name.c_str(), shape.c_str());
    }
  }
}

}  // namespace

void register_info(CLI::App& app) {
  auto f = std::make_shared<InfoFlags>();
  CLI::App* cmd = app.add_subcommand("info", "show a model's architecture, sizes and tensor types");
  cmd->add_flag("--tensors", f->tensors, "list every tensor of a GGUF file");
  add_model_flags(*cmd, f->model);
  cmd->callback([f] { info(*f); });
}

}  // namespace kestrel::cli
