// Hugging Face GPTQ and AWQ checkpoints (model/hf_quant.h) against the known answers of
// scripts/fixtures/models/make_quant_checkpoints.py: tiny-llama quantized by RTN into each layout. Every
// loaded linear must decode exactly to the script's weights, the model's logits must match the script's
// float64 forward pass of those weights, and broken checkpoints must be refused naming what is wrong.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "backends/backends.h"
#include "core/linear.h"
#include "engine/sampler.h"
#include "engine/session.h"
#include "fixture_edits.h"
#include "formats/hf_config.h"
#include "formats/safetensors.h"
#include "model/model.h"
#include "test_paths.h"

namespace kestrel {
namespace {

using nlohmann::json;
using test::expect_error;

struct Variant {
  const char* name;  // under tests/fixtures/models/quant/
  int bits;
  int64_t group;  // -1: per channel
  bool sym;
  bool act_order;
};

std::ostream& operator<<(std::ostream& os, const Variant& v) {
  return os << v.name;
}

const Variant kVariants[] = {
    {"tiny-llama-gptq-w4g32", 4, 32, false, false},
    {"tiny-llama-gptq-w4g32-actorder", 4, 32, false, true},
    {"tiny-llama-gptq-w3g64-v2", 3, 64, false, false},
    {"tiny-llama-gptq-w2g32-sym", 2, 32, true, true},
    {"tiny-llama-gptq-w8-perchannel-sym", 8, -1, true, false},
    {"tiny-llama-awq-w4g32", 4, 32, false, false},
};

std::string model_dir(const Variant& v) {
  return test::fixture(std::string("models/quant/") + v.name);
}

std::shared_ptr<SafetensorsFile> expected(const Variant& v) {
  return SafetensorsFile::open(model_dir(v) + ".expected.safetensors");
}

// Each layer's linears by HF name, as DecoderWeights::load left them (before any fusion).
std::vector<std::pair<std::string, const Linear*>> linears_of(const DecoderWeights& w) {
  std::vector<std::pair<std::string, const Linear*>> out;
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& L = w.layers[l];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (const auto& [name, lin] : {std::pair{"self_attn.q_proj", &L.wq}, std::pair{"self_attn.k_proj", &L.wk},
                                    std::pair{"self_attn.v_proj", &L.wv}, std::pair{"self_attn.o_proj", &L.wo},
                                    std::pair{"mlp.gate_proj", &L.w_gate}, std::pair{"mlp.up_proj", &L.w_up},
                                    std::pair{"mlp.down_proj", &L.w_down}})
      out.emplace_back(p + name + ".weight", lin);
  }
  return out;
}

class QuantizedCheckpoint : public ::testing::TestWithParam<Variant> {};

TEST_P(QuantizedCheckpoint, LinearsDecodeExactlyToTheScriptsWeights) {
  const Variant& v = GetParam();
  auto model = load_model(model_dir(v));
  const auto want = expected(v);
  const auto linears = linears_of(model->decoder->weights());
  ASSERT_EQ(linears.size(), 14u);
  for (const auto& [name, lin] : linears) {
    SCOPED_TRACE(name);
    ASSERT_FALSE(lin->dense());
    EXPECT_EQ(lin->bits(), v.bits);
    EXPECT_EQ(lin->groups.group_size, v.group < 0 ? lin->in_features() : v.group);
    EXPECT_EQ(lin->groups.zeros.empty(), v.sym);
    EXPECT_EQ(lin->groups.g_idx.empty(), !v.act_order);
    const Tensor w = want->tensor(name);
    ASSERT_EQ(w.shape, lin->weight.shape);
    std::vector<float> row(static_cast<size_t>(w.cols()));
    for (int64_t n = 0; n < w.rows(); ++n) {
      dequantize_row(*lin, n, row.data());
      for (int64_t k = 0; k < w.cols(); ++k)
        ASSERT_EQ(row[k], w.ptr<float>()[n * w.cols() + k]) << "output channel " << n << ", input channel " << k;
    }
  }
  EXPECT_EQ(model->decoder->weights().layers[1].w_down.id, (LinearId{1, LinearRole::Down}));
  EXPECT_TRUE(model->decoder->weights().output.dense());  // lm_head stays f16, as GPTQ and AWQ leave it
}

// Our f32 forward on the CPU against the script's float64 one on the same weights: the bound of the float
// golden models (reference/README: 1e-4 of the largest logit), and the same argmax everywhere.
TEST_P(QuantizedCheckpoint, LogitsMatchTheScript) {
  const Variant& v = GetParam();
  auto model = load_model(model_dir(v));
  const auto want = expected(v);
  const Tensor ids = want->tensor("token_ids"), ref = want->tensor("logits");
  const std::vector<int32_t> tokens(ids.ptr<int32_t>(), ids.ptr<int32_t>() + ids.numel());
  Session s(*model->decoder, {}, SessionOptions{.n_ctx = 64, .n_batch = 5});  // chunked prefill on purpose
  const Tensor logits = s.feed(tokens, /*all_logits=*/true);
  const int64_t V = ref.cols();
  ASSERT_EQ(logits.numel(), ref.numel());
  float max_ref = 0, max_diff = 0;
  int agree = 0;
  for (int64_t i = 0; i < ref.rows(); ++i) {
    const float *ours = logits.ptr<float>() + i * V, *theirs = ref.ptr<float>() + i * V;
    for (int64_t j = 0; j < V; ++j) {
      max_ref = std::max(max_ref, std::fabs(theirs[j]));
      max_diff = std::max(max_diff, std::fabs(ours[j] - theirs[j]));
    }
    agree += argmax(std::span(ours, V)) == argmax(std::span(theirs, V));
  }
  std::printf("%s: max |diff| %.3g (%.3g of max |logit|), argmax %d/%lld\n", v.name, max_diff, max_diff / max_ref,
              agree, static_cast<long long>(ref.rows()));
  EXPECT_LE(max_diff / max_ref, 1e-4f);
  EXPECT_EQ(agree, ref.rows());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, QuantizedCheckpoint, ::testing::ValuesIn(kVariants));

// GPTQ's act-order gives each linear an input order of its own: q/k/v and gate/up stack on the CPU only where
// they share it (layer 0 of the fixture, as real checkpoints do for linears of one input; layer 1 does not).
TEST(QuantizedCheckpoints, ActOrderFusesOnlyWhereOrdersAgree) {
  for (const Variant& v : {kVariants[0], kVariants[1]}) {
    SCOPED_TRACE(v.name);
    auto model = load_model(model_dir(v));
    model->decoder->place_on(backends::make_context(Device::Cpu));
    const auto& layers = model->decoder->weights().layers;
    EXPECT_FALSE(layers[0].wqkv.empty());
    EXPECT_FALSE(layers[0].w_gate_up.empty());
    EXPECT_EQ(layers[0].wqkv.id, (LinearId{0, LinearRole::QKV}));
    EXPECT_EQ(layers[1].wqkv.empty(), v.act_order);
    EXPECT_EQ(layers[1].w_gate_up.empty(), v.act_order);
    EXPECT_EQ(layers[1].wq.empty(), !v.act_order);
    if (v.act_order) EXPECT_FALSE(layers[0].wqkv.groups.g_idx.empty());
  }
}

// Broken checkpoints: a copy of a fixture with one thing changed, and the error that names it.
class BrokenCheckpoint {
 public:
  explicit BrokenCheckpoint(const char* name)
      : dir_(test::copy_fixture(scratch_, std::string("quant/") + name)),
        config_(load_json_file(dir_ + "/config.json")) {}
  const std::string& dir() const { return dir_; }
  std::string weights() const { return dir_ + "/model.safetensors"; }
  // The original config.json with quantization_config[key] set to `value`.
  void set(const char* key, const json& value) {
    json c = config_;
    c["quantization_config"][key] = value;
    test::write_config(dir_, c);
  }
  void set_config(const json& c) { test::write_config(dir_, c); }
  const json& config() const { return config_; }
  void expect(std::initializer_list<std::string_view> parts) const {
    expect_error([&] { load_model(dir_); }, parts);
  }

 private:
  test::ScratchDir scratch_;
  std::string dir_;
  json config_;
};

TEST(QuantizedCheckpoints, UnsupportedConfigsNameTheField) {
  BrokenCheckpoint g("tiny-llama-gptq-w4g32");
  g.set("bits", 5);
  g.expect({"quantization_config", "'bits' 5 is not supported (2, 3, 4, 8)"});
  g.set("bits", 4.0);
  g.expect({"'bits' must be an integer"});
  g.set("checkpoint_format", "marlin");
  g.expect({"'checkpoint_format' is 'marlin'", "gptq_v2"});
  g.set("is_marlin_format", true);
  g.expect({"'is_marlin_format'"});
  g.set("pack_dtype", "int16");
  g.expect({"'pack_dtype' is 'int16'"});
  g.set("dynamic", json{{".*\\.1\\..*", {{"bits", 8}}}});
  g.expect({"'dynamic'"});
  g.set("quant_method", "bitsandbytes");
  g.expect({"'quant_method' 'bitsandbytes' is not supported (gptq, awq)"});
  g.set("group_size", 0);
  g.expect({"'group_size' must be positive or -1"});
  g.set("sym", "yes");
  g.expect({"'sym' has the wrong type (string)"});

  BrokenCheckpoint a("tiny-llama-awq-w4g32");
  a.set("version", "gemv");
  a.expect({"AWQ 'version' is 'gemv'", "GEMM"});
  a.set("zero_point", false);
  a.expect({"AWQ 'zero_point' is false"});
  a.set("bits", 3);
  a.expect({"AWQ 'bits' 3 is not supported (4)"});
}

TEST(QuantizedCheckpoints, ConfigsThatContradictTheTensorsAreRefused) {
  BrokenCheckpoint g("tiny-llama-gptq-w4g32");
  // 8-bit codes would make qweight's 8 rows 32 input channels: the scales' groups then disagree.
  g.set("bits", 8);
  g.expect({"tensor 'model.layers.0.self_attn.q_proj.scales' is f16[2, 64], expected f16[1, 64]"});
  // The file's zero points are asymmetric.
  g.set("sym", true);
  g.expect({"says sym", "'model.layers.0.self_attn.q_proj.qzeros' holds zero point"});
  // Act-order promised, but a g_idx is missing.
  test::replace_bytes(g.weights(), "layers.0.self_attn.q_proj.g_idx", "layers.0.self_attn.q_proj.g_idX");
  g.set("desc_act", true);
  g.expect({"says desc_act", "no 'model.layers.0.self_attn.q_proj.g_idx'"});
  // No quantization_config at all: the qweight tensors are not silently read as some default.
  json c = g.config();
  c.erase("quantization_config");
  g.set_config(c);
  g.expect({"stores 'model.layers.0.self_attn.q_proj' quantized", "no quantization_config"});
}

TEST(QuantizedCheckpoints, MissingOrMisshapedTensorsAreNamed) {
  {
    BrokenCheckpoint g("tiny-llama-gptq-w4g32");
    test::replace_bytes(g.weights(), "layers.1.mlp.up_proj.qzeros", "layers.1.mlp.up_proj.qzeroX");
    g.expect({"quantized linear 'model.layers.1.mlp.up_proj' has no 'model.layers.1.mlp.up_proj.qzeros'"});
  }
  {
    // q_proj's scales [2, 64] and k_proj's [2, 32] trade names.
    BrokenCheckpoint g("tiny-llama-gptq-w3g64-v2");
    const std::string q = "layers.0.self_attn.q_proj.scales", k = "layers.0.self_attn.k_proj.scales",
                      x = "layers.0.self_attn.x_proj.scales";
    test::replace_bytes(g.weights(), q, x);
    test::replace_bytes(g.weights(), k, q);
    test::replace_bytes(g.weights(), x, k);
    g.expect({"tensor 'model.layers.0.self_attn.q_proj.scales' is f16[1, 32], expected f16[1, 64]"});
  }
  {
    // A g_idx that names a group the linear does not have.
    BrokenCheckpoint g("tiny-llama-gptq-w4g32-actorder");
    const int32_t bad = 7;
    test::patch_file(g.weights(), test::safetensors_offset(g.weights(), "model.layers.0.mlp.down_proj.g_idx", 5, 4),
                     &bad, 4);
    g.expect({"'model.layers.0.mlp.down_proj.g_idx' names group 7 for input channel 5 of 4 groups"});
  }
  {
    // AWQ's qweight read with the wrong element type.
    BrokenCheckpoint a("tiny-llama-awq-w4g32");
    test::replace_bytes(a.weights(), "\"I32\",\"shape\":[64,16]", "\"F32\",\"shape\":[64,16]");
    a.expect({"tensor 'model.layers.0.mlp.gate_proj.qweight' is f32[64, 16], expected i32[rows, columns]"});
  }
}

}  // namespace
}  // namespace kestrel
