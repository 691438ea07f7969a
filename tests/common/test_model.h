// A tiny random Llama-style decoder and a matching 128-token tokenizer, built in memory, for engine and
// server tests that need a real forward pass but no model file.
#pragma once

#include <map>
#include <memory>
#include <random>
#include <string>

#include "core/dequant.h"
#include "core/error.h"
#include "model/architecture.h"
#include "model/decoder.h"
#include "model/weight_source.h"
#include "tokenizer/tokenizer.h"

namespace kestrel::testing {

inline constexpr int kTinyVocab = 128;
inline constexpr int32_t kTinyEos = 0;

class TinyWeights : public WeightSource {
 public:
  std::map<std::string, Tensor> t;
  std::map<std::string, Linear> grouped;  // linears in a grouped integer format, served in place of t's
  bool has(const std::string& n) const override { return t.count(n) > 0 || grouped.count(n) > 0; }
  Tensor get(const std::string& n) const override {
    auto it = t.find(n);
    KS_CHECK(it != t.end(), "missing {}", n);
    return it->second;
  }
  Linear linear(const std::string& n) const override {
    auto it = grouped.find(n);
    return it != grouped.end() ? it->second : WeightSource::linear(n);
  }
};

inline Tensor tiny_random(std::mt19937& rng, std::vector<int64_t> shape, float scale) {
  Tensor f = Tensor::empty_host(DType::F32, shape);
  std::normal_distribution<float> nd(0.f, scale);
  for (int64_t i = 0; i < f.numel(); ++i) f.ptr<float>()[i] = nd(rng);
  return f;
}

// Two layers, hidden 64, 4 query / 2 KV heads, vocabulary kTinyVocab, with the architecture's options.
inline ModelConfig tiny_config(const Architecture& arch, int head_dim, int max_ctx = 256) {
  ModelConfig c;
  c.arch = std::string(arch.name);
  c.n_layers = 2;
  c.hidden = 64;
  c.ffn = 96;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = head_dim;
  c.vocab = kTinyVocab;
  c.max_ctx = max_ctx;
  c.rope.rot_dim = head_dim;
  c.rope.theta = 10000.f;
  c.rope.style = arch.gguf_rope_style;
  c.qkv_bias = arch.qkv_bias;
  c.qk_norm = arch.qk_norm;
  return c;
}

// head_dim 16 by default; 64 gives the GPU's tiled attention kernels a model they run. `wtype` stores the
// matrices in another type (quantized through the reference), as a GGUF of that type would.
inline std::unique_ptr<Decoder> tiny_decoder(uint32_t seed = 5, int max_ctx = 256, int head_dim = 16,
                                             DType wtype = DType::F32) {
  const Architecture& arch = architecture_for_hf("llama");
  const ModelConfig c = tiny_config(arch, head_dim, max_ctx);
  std::mt19937 rng(seed);
  TinyWeights w;
  const int64_t qd = c.n_heads * c.head_dim, kvd = c.n_kv_heads * c.head_dim;
  w.t["token_embd.weight"] = tiny_random(rng, {c.vocab, c.hidden}, 1.f);
  w.t["output_norm.weight"] = tiny_random(rng, {c.hidden}, 1.f);
  w.t["output.weight"] = tiny_random(rng, {c.vocab, c.hidden}, 0.3f);
  for (int l = 0; l < c.n_layers; ++l) {
    auto n = [l](const char* s) { return "blk." + std::to_string(l) + "." + s; };
    w.t[n("attn_norm.weight")] = tiny_random(rng, {c.hidden}, 1.f);
    w.t[n("attn_q.weight")] = tiny_random(rng, {qd, c.hidden}, 0.2f);
    w.t[n("attn_k.weight")] = tiny_random(rng, {kvd, c.hidden}, 0.2f);
    w.t[n("attn_v.weight")] = tiny_random(rng, {kvd, c.hidden}, 0.2f);
    w.t[n("attn_output.weight")] = tiny_random(rng, {c.hidden, qd}, 0.2f);
    w.t[n("ffn_norm.weight")] = tiny_random(rng, {c.hidden}, 1.f);
    w.t[n("ffn_gate.weight")] = tiny_random(rng, {c.ffn, c.hidden}, 0.2f);
    w.t[n("ffn_up.weight")] = tiny_random(rng, {c.ffn, c.hidden}, 0.2f);
    w.t[n("ffn_down.weight")] = tiny_random(rng, {c.hidden, c.ffn}, 0.2f);
  }
  if (wtype != DType::F32)
    for (auto& [name, t] : w.t) {
      if (t.ndim() != 2) continue;
      Tensor q = Tensor::empty_host(wtype, t.shape);
      for (int64_t r = 0; r < t.rows(); ++r) quantize_row(wtype, t.ptr<float>() + r * t.cols(), q.row(r), t.cols());
      t = q;
    }
  return std::make_unique<Decoder>(arch, c, DecoderWeights::load(w, arch, c));
}

// Token 0 is the end-of-text token; tokens 1..94 are the printable ASCII characters '!'..'~'; the rest
// are two-letter pieces, so every token decodes to plain text.
inline std::unique_ptr<Tokenizer> tiny_tokenizer() {
  TokenizerSpec s;
  s.model = TokenizerModel::byte_level_bpe;
  s.tokens.push_back("<|endoftext|>");
  for (char c = '!'; c <= '~'; ++c) s.tokens.push_back(std::string(1, c));
  while (static_cast<int>(s.tokens.size()) < kTinyVocab) {
    const int i = static_cast<int>(s.tokens.size());
    s.tokens.push_back(std::string{static_cast<char>('a' + i % 26), static_cast<char>('a' + i / 26)});
  }
  s.added_tokens.push_back(AddedToken{.id = kTinyEos, .content = "<|endoftext|>", .special = true});
  s.eos_id = kTinyEos;
  return std::make_unique<Tokenizer>(std::move(s));
}

}  // namespace kestrel::testing
