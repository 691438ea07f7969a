// Gemma 3: the architecture against transformers, and the real 270M model against two oracles.
//  - TinySynth: the tiny-gemma3 synth model (one sliding and one global layer, window 8, so the 40-token
//    reference crosses it) against transformers' f32 logits committed in tests/fixtures/models/reference/
//    (made on the GPU machine by scripts/gpu/gemma3_check.sh). Runs in CI: synth is deterministic.
//  - Gemma 3 270M Q4_K_M (docs/models.md says where to get it; not in CI, so these skip without it):
//    llama.cpp's tokens and top-5 (tests/fixtures/gemma3/top1.json) and transformers loading the same GGUF
//    (top1_transformers.json), on prompts including a 900-token passage past the 512-token window; on the
//    CPU and, on the GPU machine, on CUDA, where the CPU's logits are the reference for the GPU's too.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "backends/backends.h"
#include "core/error.h"
#include "logit_rows.h"
#include "model/hf_model.h"
#include "model/synth.h"
#include "top1_oracle.h"

namespace kestrel {
namespace {
namespace fs = std::filesystem;

std::string gemma3_path() {
  if (const char* e = std::getenv("KESTREL_GEMMA3"); e && *e) return e;
  return test::cache_dir() + "/gemma-3-270m-q4_k_m.gguf";
}

#define REQUIRE_GEMMA3()                                 \
  const std::string gemma3 = gemma3_path();              \
  if (!fs::exists(gemma3))                               \
  GTEST_SKIP() << "Gemma 3 270M not found at " << gemma3 \
               << " (set KESTREL_GEMMA3; docs/models.md says how to fetch it: it is not needed by CI)"

TEST(Gemma3, TinySynthMatchesTransformers) {
  const std::string ref_path = test::fixture("models/reference/tiny-gemma3-synth.logits.bin");
  std::ifstream meta_in(ref_path + ".json");
  ASSERT_TRUE(meta_in.good()) << ref_path << ".json";
  const nlohmann::json meta = nlohmann::json::parse(meta_in);
  const auto tokens = meta["tokens"].get<std::vector<int32_t>>();
  const int64_t V = meta["vocab"].get<int64_t>(), T = static_cast<int64_t>(tokens.size());
  std::vector<float> ref(static_cast<size_t>(T * V));
  std::ifstream in(ref_path, std::ios::binary);
  in.read(reinterpret_cast<char*>(ref.data()), static_cast<std::streamsize>(ref.size() * sizeof(float)));
  ASSERT_TRUE(in.good()) << "short reference file " << ref_path;

  const fs::path dir = fs::temp_directory_path() / ("kestrel-tiny-gemma3-" + std::to_string(::getpid()));
  SynthOptions opt;
  opt.seed = meta["seed"].get<uint64_t>();
  opt.dtype = DType::F32;
  write_synth_model(synth_preset("tiny-gemma3"), dir.string(), opt);
  auto model = load_model(dir.string());
  fs::remove_all(dir);
  ASSERT_TRUE(model->config().has_sliding_layers());
  EXPECT_EQ(model->tokenizer->encode(meta["text"].get<std::string>(), true, false), tokens);
  ASSERT_GT(T, 2 * model->config().sliding_window) << "the reference must reach past the window";

  // One prefill of every row but the last 8, which are decoded one at a time (the decode path's window).
  Session s(*model->decoder, {}, SessionOptions{.n_ctx = 256, .kv_format = KvFormat::plain(DType::F32)});
  const int64_t n_prefill = T - 8;
  test::RowStats st;
  const Tensor pre = s.feed(std::span(tokens.data(), n_prefill), /*all_logits=*/true);
  for (int64_t t = 0; t < n_prefill; ++t) test::compare_row(pre.ptr<float>() + t * V, ref.data() + t * V, V, st);
  for (int64_t t = n_prefill; t < T; ++t)
    test::compare_row(s.feed(std::span(&tokens[t], 1)).ptr<float>(), ref.data() + t * V, V, st);
  std::printf("tiny-gemma3 vs transformers (f32): worst row max|diff|/max|ref| %.2e, top-1 %d/%d\n", st.max_rel,
              st.top1_same, st.rows);
  // f32 weights, activations and cache against an f32 oracle: only summation order differs (measured 9e-7).
  // A wrong mask, norm, scale or RoPE base moves logits by a sizeable fraction of their range.
  EXPECT_LT(st.max_rel, 1e-4);
  EXPECT_EQ(st.top1_same, st.rows);
}

// config.json spellings of the Gemma 3 fields, across transformers versions.
nlohmann::json gemma3_config() {
  return {{"model_type", "gemma3_text"},
          {"num_hidden_layers", 6},
          {"hidden_size", 640},
          {"intermediate_size", 2048},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 1},
          {"head_dim", 256},
          {"vocab_size", 1000},
          {"max_position_embeddings", 32768},
          {"query_pre_attn_scalar", 256},
          {"sliding_window", 512},
          {"rope_theta", 1000000.0},
          {"rope_local_base_freq", 10000.0}};
}

TEST(Gemma3, HfConfigFields) {
  const Architecture& arch = architecture_for_hf("gemma3_text");
  nlohmann::json j = gemma3_config();
  ModelConfig c = config_from_hf(j, arch, "test");
  EXPECT_TRUE(c.tied_embeddings) << "Gemma3TextConfig ties by default";
  EXPECT_TRUE(c.post_norms && c.gelu && c.qk_norm);
  EXPECT_FLOAT_EQ(c.embed_scale, std::sqrt(640.f));
  EXPECT_FLOAT_EQ(c.attention_scale(), 1.f / 16);
  EXPECT_EQ(c.sliding_window, 512);
  for (int l = 0; l < 6; ++l) EXPECT_EQ(c.is_sliding(l), l != 5) << l;  // every 6th layer is global
  EXPECT_FLOAT_EQ(c.rope_of(0).theta, 10000.f);
  EXPECT_FLOAT_EQ(c.rope_of(5).theta, 1e6f);

  // transformers >= 4.53: layer_types; 5.x: one rope_parameters entry per layer type, with scaling.
  j["layer_types"] = {"sliding_attention", "full_attention",    "sliding_attention",
                      "sliding_attention", "sliding_attention", "full_attention"};
  j.erase("rope_theta");
  j.erase("rope_local_base_freq");
  j["rope_parameters"] = {{"full_attention", {{"rope_type", "linear"}, {"factor", 8.0}, {"rope_theta", 1e6}}},
                          {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 10000.0}}}};
  c = config_from_hf(j, arch, "test");
  EXPECT_TRUE(c.is_sliding(0) && !c.is_sliding(1) && !c.is_sliding(5));
  EXPECT_FLOAT_EQ(c.rope_of(1).linear_factor, 8.f);
  EXPECT_FLOAT_EQ(c.rope_of(1).theta, 1e6f);
  EXPECT_FLOAT_EQ(c.rope_of(0).linear_factor, 1.f);
  EXPECT_FLOAT_EQ(c.rope_of(0).theta, 10000.f);

  // What Kestrel does not implement is refused by name, not ignored.
  for (const char* bad : {"final_logit_softcapping", "attn_logit_softcapping"}) {
    nlohmann::json k = gemma3_config();
    k[bad] = 30.0;
    EXPECT_THROW(config_from_hf(k, arch, "test"), Error) << bad;
  }
  nlohmann::json act = gemma3_config();
  act["hidden_activation"] = "relu";
  EXPECT_THROW(config_from_hf(act, arch, "test"), Error);
  nlohmann::json types = gemma3_config();
  types["layer_types"] = {"sliding_attention"};
  EXPECT_THROW(config_from_hf(types, arch, "test"), Error) << "one type per layer";
}

TEST(Gemma3, TokensMatchLlamaCppAndTop1DiffersOnlyAtNearTies) {
  REQUIRE_GEMMA3();
  auto model = load_model(gemma3);
  const test::Agreement a = test::compare(*model, test::top1_fixture("gemma3/top1.json"), true);
  test::print_agreement("Gemma 3 270M top-1 vs llama.cpp (CPU)", a);
  // llama.cpp's 8-bit activations keep it from exact math: it agrees with transformers on 1255 of the 1310
  // positions (95.8%), and where not, transformers' choice is up to 0.83 below llama.cpp's top logit. That
  // bounds how close an exact implementation can come to it.
  EXPECT_FALSE(a.outside_top5);
  EXPECT_LT(a.worst_gap, 1.f);
  EXPECT_GE(static_cast<double>(a.same) / a.positions, 0.95);
}

TEST(Gemma3, Top1MatchesTransformersOnTheSameGguf) {
  REQUIRE_GEMMA3();
  auto model = load_model(gemma3);
  const test::Agreement a = test::compare(*model, test::top1_fixture("gemma3/top1_transformers.json"), false);
  test::print_agreement("Gemma 3 270M top-1 vs transformers (CPU)", a);
  // As for SmolLM2: the 16-bit activation path is within a few thousandths of transformers' f32 logits on
  // every top-5 entry (measured 0.0033; the fixture rounds to 1e-4), so a differing top-1 is only allowed
  // where the oracle's own top two are within twice the bound.
  EXPECT_LT(a.max_error, 0.02f);
  EXPECT_LE(a.worst_gap, 0.04f);
}

#if KESTREL_HAVE_CUDA
// On the GPU (bf16 activations and KV, the quantized weights' own kernels): against transformers' top-5,
// and every logit row against the CPU's on the long passage.
TEST(Gemma3, CudaMatchesTransformersAndCpu) {
  if (!backends::available(Device::Cuda)) GTEST_SKIP() << "no CUDA device";
  REQUIRE_GEMMA3();
  auto model = load_model(gemma3);
  const ops::Context gpu = backends::make_context(Device::Cuda);
  const nlohmann::json ref = test::top1_fixture("gemma3/top1_transformers.json");
  const test::Agreement a = test::compare(*model, ref, false, gpu, DType::BF16);
  test::print_agreement("Gemma 3 270M top-1 vs transformers (CUDA)", a);
  EXPECT_FALSE(a.outside_top5);
  EXPECT_GE(static_cast<double>(a.same) / a.positions, 0.95);

  auto cpu_model = load_model(gemma3);
  const auto& c = ref["cases"].back();  // the long passage
  const auto ids = c["token_ids"].get<std::vector<int32_t>>();
  const int64_t V = model->config().vocab;
  Session cs(*cpu_model->decoder, {}, SessionOptions{.n_ctx = 2048});
  Session gs(*model->decoder, gpu, SessionOptions{.n_ctx = 2048, .kv_format = KvFormat::plain(DType::BF16)});
  const Tensor cl = cs.feed(ids, true), gl = gs.feed(ids, true);
  test::RowStats st;
  for (size_t t = 0; t < ids.size(); ++t) test::compare_row(gl.ptr<float>() + t * V, cl.ptr<float>() + t * V, V, st);
  std::printf("Gemma 3 270M CUDA vs CPU, %zu-token passage: worst row %.4f, top-1 %d/%d\n", ids.size(), st.max_rel,
              st.top1_same, st.rows);
  // No worse than bf16 inference in transformers itself: on this passage its bf16 logits are off its f32
  // ones by up to 0.0555 of a row's max (worst row) and agree on top-1 at 979 of 1004 positions (measured
  // with the GGUF dequantized, CPU, transformers 5.17). 18 layers of a bf16 residual stream that the
  // embedding scale makes large cost more than the 2-layer synth models' 0.05 (cuda_model_test.cpp).
  EXPECT_LT(st.max_rel, 0.0555);
  EXPECT_GE(st.top1_same * 1004, 979 * st.rows);
}
#endif

}  // namespace
}  // namespace kestrel
