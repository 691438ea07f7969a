// all-MiniLM-L6-v2 in Kestrel against sentence-transformers: the embeddings of 200 texts
// (scripts/fixtures/encoder/make_minilm_golden.py; tests/fixtures/encoder/) must each have cosine >= 0.9999
// with the reference, on the CPU and (CudaEncoder, where a GPU is present) on the GPU. The model is cached by
// scripts/fetch_test_vocabs.sh; without it the test skips (fails under CI=true).
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../common/skip_or_fail.h"
#include "backends/backends.h"
#include "model/encoder.h"
#include "ops/context.h"
#include "test_paths.h"

namespace kestrel {
namespace {

double cosine(const std::vector<float>& a, const float* b) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    ab += static_cast<double>(a[i]) * b[i];
    aa += static_cast<double>(a[i]) * a[i];
    bb += static_cast<double>(b[i]) * b[i];
  }
  return ab / std::sqrt(aa * bb);
}

class MiniLmGolden : public testing::Test {
 protected:
  void SetUp() override {
    const std::filesystem::path dir = std::filesystem::path(test::cache_dir()) / "models" / "all-MiniLM-L6-v2";
    if (!std::filesystem::exists(dir / "model.safetensors"))
      KS_SKIP_OR_FAIL(dir << "/model.safetensors is missing: run scripts/fetch_test_vocabs.sh");
    model_ = load_embedding_model(dir.string());
    std::ifstream meta(test::fixture("encoder/minilm_golden.json"));
    const nlohmann::json j = nlohmann::json::parse(meta);
    texts_ = j["texts"].get<std::vector<std::string>>();
    dims_ = j["dimensions"].get<size_t>();
    std::ifstream f32(test::fixture("encoder/minilm_golden.f32"), std::ios::binary);
    want_.resize(texts_.size() * dims_);
    f32.read(reinterpret_cast<char*>(want_.data()), static_cast<std::streamsize>(want_.size() * sizeof(float)));
    ASSERT_TRUE(f32.good()) << "tests/fixtures/encoder/minilm_golden.f32 is shorter than the texts need";
  }

  // Embeddings of texts [begin, end), as one batch.
  std::vector<std::vector<float>> embed(size_t begin, size_t end) const {
    const std::vector<std::string_view> views(texts_.begin() + begin, texts_.begin() + end);
    return model_->embed(ctx_, views);
  }

  void check_every_text() const {
    ASSERT_EQ(dims_, static_cast<size_t>(model_->encoder->config().hidden));
    constexpr size_t kBatch = 32;
    double min_cos = 1, sum_cos = 0;
    for (size_t b = 0; b < texts_.size(); b += kBatch) {
      const size_t e = std::min(texts_.size(), b + kBatch);
      const auto got = embed(b, e);
      ASSERT_EQ(got.size(), e - b);
      for (size_t i = b; i < e; ++i) {
        ASSERT_EQ(got[i - b].size(), dims_);
        const double c = cosine(got[i - b], want_.data() + i * dims_);
        EXPECT_GE(c, 0.9999) << "text " << i << ": '" << texts_[i] << "'";
        min_cos = std::min(min_cos, c);
        sum_cos += c;
      }
    }
    std::printf("[ minilm %s ] %zu texts: cosine min %.9f (1 - min %.1e), mean %.9f\n",
                ctx_.device == Device::Cuda ? "cuda" : "cpu", texts_.size(), min_cos, 1 - min_cos,
                sum_cos / texts_.size());
  }

  // The CPU unless a test moves the model (CudaEncoder).
  ops::Context ctx_;
  std::unique_ptr<EmbeddingModel> model_;
  std::vector<std::string> texts_;
  size_t dims_ = 0;
  std::vector<float> want_;
};

// The same checks with the weights on the GPU (bf16 matrices, bf16 activations, f32 arithmetic).
class CudaEncoder : public MiniLmGolden {
 protected:
  void SetUp() override {
    if (!backends::available(Device::Cuda)) GTEST_SKIP() << "no CUDA device: the GPU encoder checks skipped";
    MiniLmGolden::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    ctx_ = backends::make_context(Device::Cuda);
    model_->encoder->place_on(ctx_);
  }
};

TEST_F(MiniLmGolden, EveryTextMatchesSentenceTransformers) {
  check_every_text();
}

TEST_F(CudaEncoder, EveryTextMatchesSentenceTransformers) {
  check_every_text();
}

// A text's embedding is the same bits alone or batched with others (each sequence attends only to itself,
// and the CPU kernels compute a row the same way in any batch).
TEST_F(MiniLmGolden, BatchingDoesNotChangeAnEmbedding) {
  const auto batch = embed(0, 40);
  for (size_t i : {0, 2, 13, 39}) EXPECT_EQ(embed(i, i + 1)[0], batch[i]) << "text " << i;
}

TEST_F(MiniLmGolden, Throughput) {
  for (size_t batch : {1, 32}) {
    const auto t0 = std::chrono::steady_clock::now();
    size_t done = 0;
    for (size_t b = 22; b + batch <= 22 + 64; b += batch) done += embed(b, b + batch).size();  // the vader texts
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("[ minilm ] batch %zu: %.1f embeddings/s\n", batch, done / s);
  }
}

}  // namespace
}  // namespace kestrel
