// The BERT encoder on a tiny random checkpoint written here: loading and its errors, the forward's
// batching and padding rules, and pooling. (Agreement with sentence-transformers on a real model is
// encoder_golden_test.cpp's.)
#include "model/encoder.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "formats/safetensors.h"
#include "ops/context.h"

namespace kestrel {
namespace {

namespace fs = std::filesystem;

constexpr int kHidden = 8, kHeads = 2, kLayers = 2, kInter = 16, kVocab = 30, kPositions = 16;

nlohmann::json tiny_config() {
  return {{"model_type", "bert"},
          {"hidden_size", kHidden},
          {"num_attention_heads", kHeads},
          {"num_hidden_layers", kLayers},
          {"intermediate_size", kInter},
          {"vocab_size", kVocab},
          {"max_position_embeddings", kPositions},
          {"type_vocab_size", 2},
          {"layer_norm_eps", 1e-12},
          {"hidden_act", "gelu"}};
}

class TinyEncoder : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("kestrel_encoder_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    write_config(tiny_config());
    std::mt19937 rng(7);
    std::vector<std::pair<std::string, Tensor>> tensors;
    auto add = [&](const std::string& name, std::vector<int64_t> shape, float mean = 0.f) {
      Tensor t = Tensor::empty_host(DType::F32, std::move(shape));
      std::normal_distribution<float> d(mean, 0.5f);
      for (int64_t i = 0; i < t.numel(); ++i) t.ptr<float>()[i] = d(rng);
      tensors.emplace_back(name, t);
    };
    add("embeddings.word_embeddings.weight", {kVocab, kHidden});
    add("embeddings.position_embeddings.weight", {kPositions, kHidden});
    add("embeddings.token_type_embeddings.weight", {2, kHidden});
    add("embeddings.LayerNorm.weight", {kHidden}, 1.f);
    add("embeddings.LayerNorm.bias", {kHidden});
    for (int l = 0; l < kLayers; ++l) {
      const std::string p = "encoder.layer." + std::to_string(l) + ".";
      for (const char* n :
           {"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"}) {
        add(p + n + ".weight", {kHidden, kHidden});
        add(p + n + ".bias", {kHidden});
      }
      add(p + "intermediate.dense.weight", {kInter, kHidden});
      add(p + "intermediate.dense.bias", {kInter});
      add(p + "output.dense.weight", {kHidden, kInter});
      add(p + "output.dense.bias", {kHidden});
      for (const char* n : {"attention.output.LayerNorm", "output.LayerNorm"}) {
        add(p + n + ".weight", {kHidden}, 1.f);
        add(p + n + ".bias", {kHidden});
      }
    }
    write_safetensors((dir_ / "model.safetensors").string(), tensors);
  }
  void TearDown() override { fs::remove_all(dir_); }

  void write_config(const nlohmann::json& j) { std::ofstream(dir_ / "config.json") << j.dump(); }

  static EncoderInput input(std::vector<int32_t> ids, size_t padding = 0) {
    EncoderInput in;
    in.ids = std::move(ids);
    in.type_ids.assign(in.ids.size(), 0);
    in.attention_mask.assign(in.ids.size(), 1);
    for (size_t i = 0; i < padding; ++i) {
      in.ids.push_back(0);
      in.type_ids.push_back(0);
      in.attention_mask.push_back(0);
    }
    return in;
  }

  fs::path dir_;
  ops::Context ctx_;
};

std::vector<float> row(const Tensor& t, int64_t r) {
  return {t.ptr<float>() + r * t.cols(), t.ptr<float>() + (r + 1) * t.cols()};
}

TEST_F(TinyEncoder, BatchedSequencesAttendOnlyToThemselves) {
  const auto enc = Encoder::load(dir_.string());
  const std::vector<EncoderInput> batch = {input({1, 5, 9, 2}), input({1, 7, 2}), input({1, 3, 4, 8, 6, 2})};
  const Tensor all = enc->forward(ctx_, batch);
  ASSERT_EQ(all.rows(), 13);
  int64_t r = 0;
  for (const EncoderInput& in : batch) {
    const Tensor alone = enc->forward(ctx_, std::span(&in, 1));
    for (int64_t i = 0; i < alone.rows(); ++i) EXPECT_EQ(row(alone, i), row(all, r + i));
    r += alone.rows();
  }
}

// Padding keys are masked out of attention: a padded row's real tokens get the unpadded row's states
// (to rounding: the softmax runs over more, zero-weighted, keys).
TEST_F(TinyEncoder, PaddingIsMaskedOut) {
  const auto enc = Encoder::load(dir_.string());
  const EncoderInput plain = input({1, 5, 9, 2}), padded = input({1, 5, 9, 2}, 3);
  const Tensor a = enc->forward(ctx_, std::span(&plain, 1)), b = enc->forward(ctx_, std::span(&padded, 1));
  ASSERT_EQ(b.rows(), 7);
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t d = 0; d < kHidden; ++d) EXPECT_NEAR(row(a, i)[d], row(b, i)[d], 1e-5) << i << "," << d;
}

// The fast variants and the reference oracle give the same forward (to f32 rounding).
TEST_F(TinyEncoder, FastOpsMatchTheReference) {
  const auto enc = Encoder::load(dir_.string());
  const std::vector<EncoderInput> batch = {input({1, 5, 9, 2}, 2), input({1, 3, 4, 8, 6, 2})};
  ops::Context ref;
  for (const char* op : {"embed", "add", "matmul", "layernorm", "gelu", "encoder_attention"})
    ref.forced[op] = "cpu.ref";
  const Tensor a = enc->forward(ctx_, batch), b = enc->forward(ref, batch);
  for (int64_t i = 0; i < a.numel(); ++i) EXPECT_NEAR(a.ptr<float>()[i], b.ptr<float>()[i], 1e-4) << i;
}

TEST_F(TinyEncoder, PoolingFollowsTheMode) {
  Tensor h = Tensor::empty_host(DType::F32, {3, 2});
  const float v[] = {3, 4, 1, 0, 100, 100};  // the last row is padding
  std::copy(std::begin(v), std::end(v), h.ptr<float>());
  const std::vector<EncoderInput> in = {input({1, 2}, 1)};
  EXPECT_EQ(pool(h, in, {Pooling::Mode::Mean, false})[0], (std::vector<float>{2, 2}));
  EXPECT_EQ(pool(h, in, {Pooling::Mode::Cls, false})[0], (std::vector<float>{3, 4}));
  EXPECT_EQ(pool(h, in, {Pooling::Mode::Cls, true})[0], (std::vector<float>{0.6f, 0.8f}));
}

void expect_error(const std::function<void()>& fn, const std::string& part) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one mentioning '" << part << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST_F(TinyEncoder, LoadErrorsSayWhatIsWrong) {
  const std::string dir = dir_.string();
  expect_error([&] { Encoder::load(dir + "/nope"); }, "not a directory");
  nlohmann::json c = tiny_config();
  c["model_type"] = "llama";
  write_config(c);
  expect_error([&] { Encoder::load(dir); }, "not a BERT encoder");
  c = tiny_config();
  c["hidden_size"] = 12;  // the tensors are 8 wide
  write_config(c);
  expect_error([&] { Encoder::load(dir); }, "expected shape [30, 12]");
  write_config(tiny_config());
  const auto enc = Encoder::load(dir);
  std::vector<int32_t> long_ids(kPositions + 1, 1);
  const EncoderInput too_long = input(long_ids);
  expect_error([&] { enc->forward(ctx_, std::span(&too_long, 1)); }, "longer than the encoder's 16 positions");
  const EncoderInput bad_id = input({1, kVocab});
  expect_error([&] { enc->forward(ctx_, std::span(&bad_id, 1)); }, "outside the encoder's vocabulary");
  expect_error([&] { load_embedding_model(dir); }, "no tokenizer.json");
  fs::remove(dir_ / "model.safetensors");
  expect_error([&] { Encoder::load(dir); }, "model.safetensors");
  fs::remove(dir_ / "config.json");
  expect_error([&] { Encoder::load(dir); }, "no config.json");
}

// `kestrel serve` picks an embedding-only server by it: a directory whose config.json is a BERT's.
TEST_F(TinyEncoder, EncoderDirectoriesAreRecognized) {
  EXPECT_TRUE(is_encoder_dir(dir_.string()));
  EXPECT_FALSE(is_encoder_dir((dir_ / "model.safetensors").string()));  // a file
  EXPECT_FALSE(is_encoder_dir((dir_ / "nope").string()));
  nlohmann::json c = tiny_config();
  c["model_type"] = "llama";
  write_config(c);
  EXPECT_FALSE(is_encoder_dir(dir_.string()));
  std::ofstream(dir_ / "config.json") << "{not json";
  EXPECT_FALSE(is_encoder_dir(dir_.string()));  // the generation loader reports it
  fs::remove(dir_ / "config.json");
  EXPECT_FALSE(is_encoder_dir(dir_.string()));
}

}  // namespace
}  // namespace kestrel
