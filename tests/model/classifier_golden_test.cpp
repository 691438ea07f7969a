// The sentiment classifier (model/sentiment_classifier.h) against the PyTorch model it was exported from:
// tests/fixtures/classifier/ holds a small CPU-trained model and, for six test pairs, the texts, their
// token ids, their MiniLM token features and the reference logits (scripts/train/sentiment/train.py's
// golden/; regenerate both with that script). The head alone runs everywhere on the committed features;
// the end-to-end check needs the cached all-MiniLM-L6-v2 (scripts/fetch_test_vocabs.sh; skips without it,
// fails under CI=true).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../common/skip_or_fail.h"
#include "backends/backends.h"
#include "core/error.h"
#include "formats/hf_config.h"
#include "model/sentiment_classifier.h"
#include "test_paths.h"

namespace kestrel {
namespace {

namespace fs = std::filesystem;

// Logits agree to float rounding: the reference ops accumulate in double, PyTorch in f32, and BatchNorm
// is folded into the convs here but not there.
constexpr double kHeadTolerance = 1e-4;
// End to end the token features come from Kestrel's encoder, which matches sentence-transformers to
// cosine >= 0.9999 (encoder_golden_test.cpp), not bit for bit.
constexpr double kEndToEndTolerance = 2e-3;

class ClassifierGolden : public testing::Test {
 protected:
  void SetUp() override {
    const nlohmann::json j = load_json_file(golden("golden.json"));
    texts_ = j["texts"].get<std::vector<std::string>>();
    token_ids_ = j["token_ids"].get<std::vector<std::vector<int32_t>>>();
    logits_ = j["logits"].get<std::vector<std::vector<float>>>();
    hidden_ = j["hidden"].get<int64_t>();
    for (const auto& name : j["images"]) images_.push_back(load_pnm(golden(name.get<std::string>())));
    head_ = SentimentHead::load(model_dir());
  }

  static std::string model_dir() { return test::fixture("classifier/model"); }
  static std::string golden(const std::string& name) { return test::fixture("classifier/golden/" + name); }

  Tensor image_batch() const {
    const SentimentClassifierConfig& c = head_->config();
    const int64_t S = c.image_size, plane = 3 * S * S;
    Tensor t = Tensor::empty_host(DType::F32, {static_cast<int64_t>(images_.size()), 3, S, S});
    for (size_t i = 0; i < images_.size(); ++i)
      std::copy_n(image_input(images_[i], c).ptr<float>(), plane, t.ptr<float>() + i * plane);
    return t;
  }

  void expect_logits(const Tensor& got, double tolerance) const {
    ASSERT_EQ(got.rows(), static_cast<int64_t>(logits_.size()));
    double worst = 0;
    for (size_t i = 0; i < logits_.size(); ++i) {
      size_t want_top = 0, got_top = 0;
      for (size_t k = 0; k < logits_[i].size(); ++k) {
        const float g = got.ptr<float>()[i * got.cols() + k];
        EXPECT_NEAR(g, logits_[i][k], tolerance) << "pair " << i << " class " << k << ": '" << texts_[i] << "'";
        worst = std::max(worst, std::abs(g - static_cast<double>(logits_[i][k])));
        if (logits_[i][k] > logits_[i][want_top]) want_top = k;
        if (g > got.ptr<float>()[i * got.cols() + got_top]) got_top = k;
      }
      EXPECT_EQ(got_top, want_top) << "pair " << i;
    }
    std::printf("[ classifier ] %zu pairs: max |logit - torch| %.2e\n", logits_.size(), worst);
  }

  ops::Context ctx_ = backends::make_context(Device::Cpu);
  std::vector<std::string> texts_;
  std::vector<std::vector<int32_t>> token_ids_;
  std::vector<std::vector<float>> logits_;
  std::vector<RgbImage> images_;
  int64_t hidden_ = 0;
  std::unique_ptr<SentimentHead> head_;
};

TEST_F(ClassifierGolden, HeadMatchesTorchOnTheReferenceTokenFeatures) {
  std::vector<ops::EncoderSeq> seqs;
  int32_t rows = 0;
  for (const auto& ids : token_ids_) {
    seqs.push_back({rows, static_cast<int32_t>(ids.size())});
    rows += static_cast<int32_t>(ids.size());
  }
  ASSERT_EQ(hidden_, head_->config().text_dim);
  Tensor features = Tensor::empty_host(DType::F32, {rows, hidden_});
  std::ifstream f(golden("golden_features.f32"), std::ios::binary);
  f.read(static_cast<char*>(features.data), static_cast<std::streamsize>(features.nbytes()));
  ASSERT_TRUE(f.good()) << "golden_features.f32 is shorter than the token ids need";
  expect_logits(head_->forward(ctx_, features, seqs, image_batch()), kHeadTolerance);
}

TEST_F(ClassifierGolden, TextAndImageEndToEndMatchTorch) {
  const fs::path enc = fs::path(test::cache_dir()) / "models" / head_->config().encoder;
  if (!fs::exists(enc / "model.safetensors"))
    KS_SKIP_OR_FAIL(enc << "/model.safetensors is missing: run scripts/fetch_test_vocabs.sh");
  const auto model = load_sentiment_classifier(model_dir(), enc.string());
  EncoderInputOptions options;
  options.pad = false;
  options.max_length = static_cast<size_t>(head_->config().max_tokens);
  const std::vector<std::string_view> views(texts_.begin(), texts_.end());
  const std::vector<EncoderInput> inputs = encode_batch(*model->encoder->tokenizer, views, options);
  for (size_t i = 0; i < inputs.size(); ++i)
    EXPECT_EQ(inputs[i].ids, token_ids_[i]) << "the tokenizers disagree on '" << texts_[i] << "'";
  expect_logits(model->logits(ctx_, views, images_), kEndToEndTolerance);
}

TEST_F(ClassifierGolden, RefusesImagesOfAnotherSizeAndOtherVariants) {
  RgbImage small{8, 8, std::vector<uint8_t>(8 * 8 * 3)};
  try {
    image_input(small, head_->config());
    ADD_FAILURE() << "an 8x8 image was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("takes 32x32 RGB images, got 8x8"), std::string::npos) << e.what();
  }
  const fs::path dir = fs::temp_directory_path() / ("kestrel_classifier_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  nlohmann::json cfg = load_json_file(model_dir() + "/config.json");
  cfg["variant"] = "text";
  std::ofstream(dir / "config.json") << cfg.dump();
  try {
    SentimentHead::load(dir.string());
    ADD_FAILURE() << "a text-only config was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("runs the fused"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace kestrel
