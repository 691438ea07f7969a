// `kestrel synth` output: real preset shapes, a directory that loads in Kestrel (single file and
// sharded), a working tokenizer, and finite, non-flat logits that are the same for the same seed.
#include "model/synth.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "core/error.h"
#include "engine/session.h"
#include "model/model.h"

namespace kestrel {
namespace {
namespace fs = std::filesystem;

fs::path scratch(const std::string& name) {
  fs::path d = fs::exists("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
  d /= "kestrel_synth_test_" + std::to_string(::getpid()) + "_" + name;
  fs::remove_all(d);
  return d;
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

std::vector<float> logits_of(const std::string& dir, const std::vector<int32_t>& prompt) {
  auto m = load_model(dir);
  ops::Context ctx;
  Session s(*m->decoder, ctx, SessionOptions{.n_ctx = 64});
  Tensor l = s.feed(prompt);
  return {l.ptr<float>(), l.ptr<float>() + l.numel()};
}

TEST(SynthPresets, RealShapes) {
  const SynthPreset& l8 = synth_preset("llama3-8b");
  EXPECT_EQ(l8.n_layers, 32);
  EXPECT_EQ(l8.hidden, 4096);
  EXPECT_EQ(l8.ffn, 14336);
  EXPECT_EQ(l8.n_kv_heads, 8);
  EXPECT_EQ(l8.vocab, 128256);
  EXPECT_FALSE(l8.tied_embeddings);
  const SynthPreset& l1 = synth_preset("llama3.2-1b");
  EXPECT_TRUE(l1.tied_embeddings);
  EXPECT_EQ(l1.head_dim, 64);
  EXPECT_EQ(l1.llama3_rope_factor, 32.f);
  EXPECT_TRUE(synth_preset("qwen2.5-7b").qkv_bias);
  EXPECT_EQ(synth_preset("qwen2.5-7b").vocab, 152064);
  EXPECT_TRUE(synth_preset("qwen3-8b").qk_norm);
  EXPECT_EQ(synth_preset("qwen3-8b").n_layers, 36);
  EXPECT_EQ(synth_preset("mistral-7b").vocab, 32768);
  try {
    synth_preset("gpt-5");
    FAIL() << "unknown preset accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("llama3-8b"), std::string::npos) << e.what();
  }
}

TEST(SynthPresets, ConfigMatchesPreset) {
  const nlohmann::json c = synth_config_json(synth_preset("llama3.2-1b"), DType::BF16);
  EXPECT_EQ(c["model_type"], "llama");
  EXPECT_EQ(c["rope_scaling"]["rope_type"], "llama3");
  EXPECT_EQ(c["tie_word_embeddings"], true);
  EXPECT_EQ(c["torch_dtype"], "bfloat16");
  const nlohmann::json t = synth_tokenizer_json(synth_preset("llama3-8b"));
  EXPECT_EQ(t["model"]["vocab"].size() + t["added_tokens"].size(), 128256u);
}

TEST(SynthNormal, MomentsAndDeterminism) {
  double sum = 0, sq = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double z = synth_normal(7, 3, i);
    sum += z;
    sq += z * z;
  }
  EXPECT_NEAR(sum / n, 0.0, 0.01);  // 4.5 standard errors (1 / sqrt(n))
  EXPECT_NEAR(sq / n, 1.0, 0.02);   // 6 standard errors (sqrt(2 / n))
  // The moments pass any unit-variance distribution (a scaled uniform too): the shape, by chi-square against
  // the standardised Irwin-Hall distribution (sum of four uniforms) synth_normal draws, over 20 bins of equal
  // probability (19 degrees of freedom; 43.8 is the 0.999 quantile).
  auto irwin_hall_cdf = [](double z) {
    const double x = std::clamp(z / std::sqrt(3.0) + 2, 0.0, 4.0);  // back to the sum of four U[0, 1)
    const double binom[] = {1, 4, 6, 4, 1};
    double f = 0;
    for (int k = 0; k <= static_cast<int>(x) && k < 4; ++k) f += (k % 2 ? -1 : 1) * binom[k] * std::pow(x - k, 4);
    return f / 24;
  };
  std::vector<int> count(20);
  for (int i = 0; i < n; ++i) ++count[std::min(19, static_cast<int>(irwin_hall_cdf(synth_normal(7, 3, i)) * 20))];
  double chi2 = 0;
  for (int c : count) chi2 += (c - n / 20.0) * (c - n / 20.0) / (n / 20.0);
  EXPECT_LT(chi2, 43.8);
  EXPECT_EQ(synth_normal(7, 3, 11), synth_normal(7, 3, 11));
  EXPECT_NE(synth_normal(7, 3, 11), synth_normal(8, 3, 11));
  EXPECT_NE(synth_normal(7, 3, 11), synth_normal(7, 4, 11));
}

TEST(SynthModel, TinyLoadsWithFiniteDeterministicLogits) {
  const fs::path a = scratch("a"), b = scratch("b"), c = scratch("c");
  SynthOptions opt;
  opt.seed = 42;
  uint64_t last_done = 0;
  opt.progress = [&](uint64_t done, uint64_t total) {
    EXPECT_LE(done, total);
    last_done = done;
  };
  const SynthSummary s = write_synth_model(synth_preset("tiny"), a.string(), opt);
  EXPECT_EQ(last_done, s.tensor_bytes);
  EXPECT_EQ(s.shards, 1);
  opt.progress = {};
  write_synth_model(synth_preset("tiny"), b.string(), opt);
  EXPECT_EQ(read_bytes(a / "model.safetensors"), read_bytes(b / "model.safetensors"));
  opt.seed = 43;
  write_synth_model(synth_preset("tiny"), c.string(), opt);

  auto m = load_model(a.string());
  EXPECT_EQ(m->config().vocab, 512);
  EXPECT_EQ(m->config().head_dim, 64);
  // The tokenizer round-trips text and its merges give multi-byte tokens for common words.
  const std::string text = "the people said that it was a good day for their work";
  const std::vector<int32_t> ids = m->tokenizer->encode(text, /*add_special=*/true, /*parse_special=*/false);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], m->tokenizer->bos_id());
  EXPECT_LT(ids.size(), text.size() / 2);
  EXPECT_EQ(m->tokenizer->decode(ids, /*skip_special=*/true), text);
  EXPECT_TRUE(m->tokenizer->is_eog(m->tokenizer->find_token("<|eot_id|>").value()));

  const std::vector<float> la = logits_of(a.string(), ids), lb = logits_of(b.string(), ids),
                           lc = logits_of(c.string(), ids);
  ASSERT_EQ(la.size(), 512u);
  EXPECT_EQ(la, lb);
  EXPECT_NE(la, lc);
  double mean = std::accumulate(la.begin(), la.end(), 0.0) / la.size(), var = 0;
  for (float v : la) {
    ASSERT_TRUE(std::isfinite(v));
    var += (v - mean) * (v - mean);
  }
  EXPECT_GT(std::sqrt(var / la.size()), 0.5) << "logits are flat";
  fs::remove_all(a);
  fs::remove_all(b);
  fs::remove_all(c);
}

TEST(SynthModel, ShardedEqualsSingleFile) {
  const fs::path one = scratch("one"), many = scratch("many");
  SynthOptions opt;
  opt.seed = 5;
  write_synth_model(synth_preset("tiny"), one.string(), opt);
  opt.max_shard_bytes = 64 << 10;
  const SynthSummary s = write_synth_model(synth_preset("tiny"), many.string(), opt);
  EXPECT_GT(s.shards, 2);
  EXPECT_TRUE(fs::exists(many / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(many / "model.safetensors"));
  const std::vector<int32_t> prompt = {1, 2, 3, 300, 17};
  EXPECT_EQ(logits_of(one.string(), prompt), logits_of(many.string(), prompt));
  fs::remove_all(one);
  fs::remove_all(many);
}

TEST(SynthModel, QwenFamiliesLoad) {
  for (const char* name : {"tiny-qwen2", "tiny-qwen3"}) {
    const fs::path d = scratch(name);
    write_synth_model(synth_preset(name), d.string(), SynthOptions{});
    auto m = load_model(d.string());
    EXPECT_EQ(m->config().qkv_bias, std::string(name) == "tiny-qwen2");
    EXPECT_EQ(m->config().qk_norm, std::string(name) == "tiny-qwen3");
    EXPECT_EQ(m->tokenizer->bos_id() >= 0 && m->tokenizer->add_bos(), false) << name;
    const std::vector<float> l = logits_of(d.string(), m->tokenizer->encode("hello world", true, false));
    for (float v : l) ASSERT_TRUE(std::isfinite(v)) << name;
    fs::remove_all(d);
  }
}

TEST(SynthModel, BadArgumentsAreErrors) {
  SynthOptions opt;
  opt.dtype = DType::Q4_0;
  EXPECT_THROW(write_synth_model(synth_preset("tiny"), scratch("bad").string(), opt), Error);
  EXPECT_THROW(write_synth_model(synth_preset("tiny"), "/proc/definitely/not/here", SynthOptions{}), Error);
}

}  // namespace
}  // namespace kestrel
