// SKVQ and KIVI end to end on a tiny random model (CPU): tokens inside the window and sinks are the f16 cache's; a
// long ragged run seals blocks and stays finite; a KIVI session cut inside a sealed block recomputes what it dropped;
// calibration writes permutations and clips that round-trip through their file, and bad files or mismatched models
// are refused with what to do.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "../common/test_model.h"
#include "core/error.h"
#include "engine/kv_calibrate.h"
#include "engine/session.h"

namespace kestrel {
namespace {

using testing::tiny_decoder;

std::vector<int32_t> some_tokens(int n, int vocab) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = (i * 37 + 11) % vocab;
  return t;
}

SessionOptions with(const char* kv, int n_batch) {
  SessionOptions o;
  o.n_ctx = 256;
  o.n_batch = n_batch;
  o.kv_format = *kv_format_from_name(kv);
  return o;
}

TEST(KvWindowSession, InsideTheWindowTheCacheIsAnF16One) {
  auto model = tiny_decoder(5, 256, 64);
  const auto ids = some_tokens(100, static_cast<int>(model->config().vocab));
  Session f16(*model, {}, with("f16", 32));
  const Tensor a = f16.feed(ids, true);
  // kivi2: the default 16-token blocks round up to its 32-token key groups (the cache refuses 16).
  for (const char* kv : {"skvq", "kivi2"}) {
    Session s(*model, {}, with(kv, 32));
    const Tensor b = s.feed(ids, true);
    for (int64_t i = 0; i < a.numel(); ++i) ASSERT_NEAR(a.ptr<float>()[i], b.ptr<float>()[i], 1e-4) << kv << " " << i;
  }
}

// Sum of |got - want| over all logits, got finite.
double l1_error(const Tensor& got, const Tensor& want) {
  double e = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    EXPECT_TRUE(std::isfinite(got.ptr<float>()[i])) << i;
    e += std::fabs(got.ptr<float>()[i] - want.ptr<float>()[i]);
  }
  return e;
}

TEST(KvWindowSession, LongRaggedRunsSealBlocksAndStayClose) {
  auto model = tiny_decoder(5, 256, 64);
  const int V = static_cast<int>(model->config().vocab);
  const auto ids = some_tokens(250, V);
  Session f32(*model, {}, with("f32", 250)), int2(*model, {}, with("int2", 250));
  const Tensor want = f32.feed(ids, true);
  const double err_int2 = l1_error(int2.feed(ids, true), want);
  for (const char* kv : {"skvq", "kivi2"}) {
    Session s(*model, {}, with(kv, 250));
    const double err = l1_error(s.feed(ids, true), want);
    EXPECT_GT(err, 0.0) << kv;       // the body is 2-bit
    EXPECT_LT(err, err_int2) << kv;  // full precision where it matters beats plain 2-bit codes
    // Decoding token by token after a chunked prompt: blocks seal step by step.
    Session step(*model, {}, with(kv, 7));
    step.feed(std::span(ids).first(200));
    for (int i = 200; i < 250; ++i) {
      const Tensor l = step.feed(std::span(ids).subspan(i, 1));
      ASSERT_TRUE(std::isfinite(l.ptr<float>()[0])) << kv;
    }
    EXPECT_EQ(step.length(), 250) << kv;
  }
}

TEST(KvWindowSession, KiviTruncationInsideASealedBlockRecomputesItsTokens) {
  auto model = tiny_decoder(5, 256, 64);
  const auto ids = some_tokens(250, static_cast<int>(model->config().vocab));
  // After 250 tokens, blocks 0-2 (positions 0-95) are sealed. Cutting at 70 drops block 2 and recomputes
  // positions 64-69; cutting at 64 keeps the same sealed blocks and feeds 64-69 with the rest.
  Session cut(*model, {}, with("kivi2", 250)), even(*model, {}, with("kivi2", 250));
  cut.feed(ids);
  even.feed(ids);
  cut.truncate(70);
  EXPECT_EQ(cut.length(), 70);
  even.truncate(64);
  EXPECT_EQ(even.length(), 64);
  const Tensor a = cut.feed(std::span(ids).subspan(70, 30), true);
  const Tensor b = even.feed(std::span(ids).subspan(64, 36), true);
  for (int64_t i = 0; i < a.numel(); ++i) ASSERT_NEAR(a.ptr<float>()[i], b.ptr<float>()[6 * a.dim(1) + i], 1e-4) << i;
}

TEST(KvCalibration, CalibratesRoundTripsAndChecksTheModel) {
  auto model = tiny_decoder(5, 256, 64);
  const ModelConfig& c = model->config();
  const auto ids = some_tokens(300, static_cast<int>(c.vocab));
  KvCalibrationOptions opt;
  opt.n_ctx = 150;
  opt.search_tokens = 150;
  const KvCalibration cal = calibrate_kv(*model, {}, ids, opt);
  ASSERT_EQ(cal.n_layers, c.n_layers);
  EXPECT_EQ(cal.tokens, 300);
  ASSERT_TRUE(cal.clips.contains("skvq-k2v1.5"));
  const auto dir = std::filesystem::temp_directory_path() / "kestrel_kv_calib_test";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "m.kv-calib.json").string();
  save_kv_calibration(cal, path);
  const KvCalibration back = load_kv_calibration(path);  // checks every order is a permutation
  EXPECT_EQ(back.layers[0].k_order, cal.layers[0].k_order);
  EXPECT_EQ(back.clips.at("skvq-k2v2"), cal.clips.at("skvq-k2v2"));
  const KvFormat f = with_kv_calibration(*kv_format_from_name("skvq"), c, "unused", path);
  ASSERT_TRUE(f.calibration);
  Session s(*model, {}, SessionOptions{.n_ctx = 256, .n_batch = 64, .kv_format = f});
  EXPECT_NO_THROW(s.feed(ids.size() > 200 ? std::span(ids).first(200) : std::span(ids)));

  ModelConfig other = c;
  other.n_layers += 1;
  EXPECT_THROW(with_kv_calibration(*kv_format_from_name("skvq"), other, "unused", path), Error);
  EXPECT_THROW(with_kv_calibration(*kv_format_from_name("int8"), c, "unused", path), Error);  // not an SKVQ format
  const std::string bad = (dir / "bad.json").string();
  for (const char* text : {"not json", "{\"kestrel_kv_calibration\": 1, \"n_layers\": 2}",
                           "{\"kestrel_kv_calibration\": 1, \"n_layers\": 1, \"n_kv_heads\": 1, \"head_dim\": 2, "
                           "\"layers\": [{\"k_order\": [0, 0], \"v_order\": [0, 1]}]}",
                           "{\"kestrel_kv_calibration\": 1, \"n_layers\": 1, \"n_kv_heads\": 1, \"head_dim\": 2, "
                           "\"layers\": [{\"k_order\": [1, 0], \"v_order\": [0, 1]}], \"clips\": {\"x\": [[2, 1]]}}"}) {
    std::ofstream(bad) << text;
    EXPECT_THROW(load_kv_calibration(bad), Error) << text;
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kestrel
