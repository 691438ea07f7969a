// Whole-model checks on the GPU (run by scripts/gpu/run_all.sh; skipped without a CUDA device): logits of
// a synthetic model match transformers (reference computed in the same run by
// scripts/gpu/reference_logits.py), GGUF fixtures give the CPU's logits, and greedy text is the same on the
// CPU and the GPU. The executor's own GPU checks are in tests/engine/executor_cuda_test.cpp.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backends/backends.h"
#include "engine/generate.h"
#include "engine/sampler.h"
#include "engine/session.h"
#include "logit_rows.h"
#include "model/model.h"
#include "model/synth.h"
#include "test_paths.h"

namespace kestrel {
namespace {
namespace fs = std::filesystem;

#if KESTREL_HAVE_CUDA

ops::Context gpu_context() {
  return backends::make_context(Device::Cuda);
}

#define REQUIRE_GPU() \
  if (!backends::available(Device::Cuda)) GTEST_SKIP() << "no CUDA device: whole-model GPU checks skipped"

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

using test::compare_row;
using test::RowStats;

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  for (size_t b = 0, e; b <= s.size(); b = e + 1) {
    e = std::min(s.find(':', b), s.size());
    if (e > b) out.push_back(s.substr(b, e - b));
  }
  return out;
}

// One synth model against its transformers reference: all but the last 8 tokens as one prefill (every
// row's logits), the rest through the decode graphs.
void check_logits_vs_transformers(const std::string& dir, const std::string& ref_path) {
  SCOPED_TRACE(dir);
  std::ifstream meta_in(ref_path + ".json");
  ASSERT_TRUE(meta_in.good()) << ref_path << ".json";
  const nlohmann::json meta = nlohmann::json::parse(meta_in);
  const std::vector<int32_t> tokens = meta["tokens"].get<std::vector<int32_t>>();
  const int64_t V = meta["vocab"].get<int64_t>(), T = static_cast<int64_t>(tokens.size());
  std::vector<float> ref(static_cast<size_t>(T * V));
  std::ifstream in(ref_path, std::ios::binary);
  in.read(reinterpret_cast<char*>(ref.data()), static_cast<std::streamsize>(ref.size() * sizeof(float)));
  ASSERT_TRUE(in.good()) << "short reference file " << ref_path;

  auto model = load_model(dir);
  ASSERT_EQ(model->config().vocab, V);
  // The reference's ids come from transformers' tokenizer: Kestrel's must be the same.
  EXPECT_EQ(model->tokenizer->encode(meta["text"].get<std::string>(), true, false), tokens);
  const int64_t n_prefill = T - 8;
  Session s(*model->decoder, gpu_context(), SessionOptions{.n_ctx = 256, .kv_format = KvFormat::plain(DType::BF16)});
  const Tensor pre = s.feed(std::span(tokens.data(), n_prefill), /*all_logits=*/true);
  RowStats prefill, decode;
  for (int64_t t = 0; t < n_prefill; ++t) compare_row(pre.ptr<float>() + t * V, ref.data() + t * V, V, prefill);
  for (int64_t t = n_prefill; t < T; ++t) {
    const Tensor l = s.feed(std::span(&tokens[t], 1));
    compare_row(l.ptr<float>(), ref.data() + t * V, V, decode);
  }
  std::printf(
      "%s vs transformers (f32 reference): prefill worst row max|diff|/max|ref| %.4f, top-1 %d/%d; decode "
      "%.4f, top-1 %d/%d\n",
      fs::path(dir).filename().c_str(), prefill.max_rel, prefill.top1_same, prefill.rows, decode.max_rel,
      decode.top1_same, decode.rows);
  // bf16 weights and activations against an f32 oracle: a few percent of the logit range, top-1 nearly always.
  EXPECT_LT(prefill.max_rel, 0.05);
  EXPECT_LT(decode.max_rel, 0.05);
  EXPECT_GE(prefill.top1_same, prefill.rows * 9 / 10);
  EXPECT_GE(decode.top1_same, decode.rows * 7 / 8);
}

// KESTREL_SYNTH_LOGITS_DIR: synth models (':'-separated); KESTREL_SYNTH_LOGITS_REF: for each, f32 logits
// [T, vocab] from scripts/gpu/reference_logits.py (with REF.json holding the token ids).
TEST(CudaModel, SynthLogitsMatchTransformers) {
  REQUIRE_GPU();
  const std::vector<std::string> dirs = split_list(env("KESTREL_SYNTH_LOGITS_DIR")),
                                 refs = split_list(env("KESTREL_SYNTH_LOGITS_REF"));
  if (dirs.empty() || refs.empty()) GTEST_SKIP() << "KESTREL_SYNTH_LOGITS_DIR/REF not set (scripts/gpu/run_all.sh)";
  ASSERT_EQ(dirs.size(), refs.size()) << "one reference per model directory";
  for (size_t i = 0; i < dirs.size(); ++i) check_logits_vs_transformers(dirs[i], refs[i]);
}

// GGUF files (f32, f16, q8_0 tables dequantized to bf16 at placement; Llama, Qwen2, Qwen3) and GPTQ/AWQ
// checkpoints give the same logits on the GPU as on the CPU, over a prefill of every row (the dequantizing
// GEMMs for grouped weights) and graph decode steps (cuda.gmv where it reads the format: U4 and U8 in whole
// 16-byte chunks of a group; the dequantizing GEMMs for U2 in groups of 32, U3 and act-order). Grouped
// integer weights stay in their format on the device.
TEST(CudaModel, FixturesMatchCpu) {
  REQUIRE_GPU();
  for (const char* name : {"tiny-llama-f32.gguf", "tiny-llama-f16.gguf", "tiny-llama-q8_0.gguf", "tiny-qwen2-f32.gguf",
                           "tiny-qwen3-f32.gguf", "quant/tiny-llama-gptq-w4g32", "quant/tiny-llama-gptq-w4g32-actorder",
                           "quant/tiny-llama-awq-w4g32", "quant/tiny-llama-gptq-w8-perchannel-sym",
                           "quant/tiny-llama-gptq-w2g32-sym", "quant/tiny-llama-gptq-w3g64-v2"}) {
    SCOPED_TRACE(name);
    const bool grouped = std::string(name).starts_with("quant/");
    const std::string path = test::fixture(std::string("models/") + name);
    std::vector<int32_t> ids(24);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 37 + 5) % 300);
    const int64_t n_prefill = 16;
    auto logits = [&](const ops::Context& ctx, DType kv) {
      auto model = load_model(path);
      Session s(*model->decoder, ctx, SessionOptions{.n_ctx = 64, .kv_format = KvFormat::plain(kv)});
      if (grouped && ctx.device == Device::Cuda) {
        const LayerWeights& L = model->decoder->weights().layers[0];
        EXPECT_EQ(model->decoder->device(), Device::Cuda);
        for (const Linear* l : {&L.wo, &L.w_down}) {
          EXPECT_FALSE(l->dense()) << l->id.name() << " was decoded at placement: " << l->describe();
          EXPECT_EQ(l->weight.device, Device::Cuda);
        }
      }
      const int64_t V = model->config().vocab;
      std::vector<float> out(ids.size() * V);
      const Tensor pre = s.feed(std::span(ids.data(), n_prefill), /*all_logits=*/true);
      std::copy_n(pre.ptr<float>(), n_prefill * V, out.begin());
      for (size_t t = n_prefill; t < ids.size(); ++t)
        std::copy_n(s.feed(std::span(&ids[t], 1)).ptr<float>(), V, out.begin() + t * V);
      return out;
    };
    const std::vector<float> cpu = logits(ops::Context{}, DType::F32), gpu = logits(gpu_context(), DType::BF16);
    const int64_t V = static_cast<int64_t>(cpu.size() / ids.size());
    RowStats prefill, decode;
    for (size_t t = 0; t < ids.size(); ++t)
      compare_row(gpu.data() + t * V, cpu.data() + t * V, V, static_cast<int64_t>(t) < n_prefill ? prefill : decode);
    std::printf("%s GPU vs CPU: prefill worst row %.4f, top-1 %d/%d; decode %.4f, top-1 %d/%d\n", name, prefill.max_rel,
                prefill.top1_same, prefill.rows, decode.max_rel, decode.top1_same, decode.rows);
    // These 64-wide models are more sensitive to bf16 than real-size ones: rounding tiny-llama's weights alone
    // moves transformers' f32 logits by up to 0.038 of a row's range (the committed tiny-llama and
    // tiny-llama-bf16-sharded references), and bf16 activations and KV add as much again. A wrong rotation,
    // mask or head mapping moves them by the order of the range itself.
    EXPECT_LT(prefill.max_rel, 0.1);
    EXPECT_LT(decode.max_rel, 0.1);
    EXPECT_GE(prefill.top1_same, prefill.rows * 7 / 8);
    EXPECT_GE(decode.top1_same, decode.rows * 7 / 8);
  }
}

// The CPU's greedy path with every step's logits: the f32 oracle the GPU's greedy text is held to.
std::vector<std::vector<float>> cpu_greedy_logits(const Model& m, const std::vector<int32_t>& prompt, int n) {
  Session s(*m.decoder, ops::Context{}, SessionOptions{.n_ctx = 256, .kv_format = KvFormat::plain(DType::F32)});
  std::vector<std::vector<float>> rows;
  Tensor l = s.feed(prompt);
  for (int i = 0; i < n; ++i) {
    rows.emplace_back(l.ptr<float>(), l.ptr<float>() + m.config().vocab);
    const int32_t next = argmax(std::span<const float>(rows.back()));
    l = s.feed(std::span(&next, 1));
  }
  return rows;
}

// KESTREL_SYNTH_GREEDY_DIR: a small synth model, run on both devices. The GPU (bf16 activations and KV, its
// own sampling kernel) must pick the CPU's (f32) greedy token at every position, except at a near-tie of
// the CPU's logits, where rounding may legitimately pick another candidate; the texts then part and the
// comparison stops there. Near-tie: the GPU's token is within 2e of the CPU's top logit, e = 0.02 * max|logit|
// of the row, a bound on the bf16 path's logit error (worst rows measured against f32 on the 2-layer presets:
// 0.013-0.017 of max|logit|, BENCHMARKS.md; SynthLogitsMatchTransformers allows 0.05). Any other difference
// is a bug; agreement at a near-tie continues the comparison, since both then hold the same context.
TEST(CudaModel, GreedyTextSameOnCpuAndGpu) {
  REQUIRE_GPU();
  const std::string dir = env("KESTREL_SYNTH_GREEDY_DIR");
  if (dir.empty()) GTEST_SKIP() << "KESTREL_SYNTH_GREEDY_DIR not set (scripts/gpu/run_all.sh)";
  constexpr int kTokens = 48;
  auto model = load_model(dir);
  const std::vector<int32_t> prompt = model->tokenizer->encode("the quick brown fox", true, false);
  const std::vector<std::vector<float>> cpu = cpu_greedy_logits(*model, prompt, kTokens);
  auto gpu_model = load_model(dir);
  Session s(*gpu_model->decoder, gpu_context(),
            SessionOptions{.n_ctx = 256, .kv_format = KvFormat::plain(DType::BF16)});
  const std::vector<int32_t> gpu = generate(s, *gpu_model->tokenizer, SamplingParams{}, prompt,
                                            GenerateOptions{.max_tokens = kTokens, .ignore_eos = true})
                                       .tokens;
  ASSERT_EQ(gpu.size(), static_cast<size_t>(kTokens));
  int same = 0;
  for (; same < kTokens; ++same) {
    const std::vector<float>& row = cpu[same];
    const int32_t want = argmax(std::span<const float>(row));
    if (gpu[same] == want) continue;
    float max_abs = 0;
    for (float x : row) max_abs = std::max(max_abs, std::fabs(x));
    const float gap = row[want] - row[gpu[same]], allowed = 2 * 0.02f * max_abs;
    std::printf("greedy: GPU parts from the CPU at token %d: CPU logit gap %.4f (near-tie bound %.4f)\n", same, gap,
                allowed);
    EXPECT_LE(gap, allowed) << "token " << same << ": the GPU picks " << gpu[same] << ", the CPU " << want;
    break;
  }
  std::printf("greedy: CPU and GPU agree on the first %d of %d tokens\n", same, kTokens);
}

#else

TEST(CudaModel, NotBuilt) {
  GTEST_SKIP() << "this build has no CUDA backend: whole-model GPU checks skipped";
}

#endif

}  // namespace
}  // namespace kestrel
