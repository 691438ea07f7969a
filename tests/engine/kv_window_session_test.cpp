// SKVQ end to end on a tiny random model (CPU): tokens inside the window and sinks are the f16 cache's; a long ragged
// run seals blocks and stays finite; calibration writes permutations and clips that round-trip through their file, and
// bad files or mismatched models are refused with what to do.
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
  Session f16(*model, {}, with("f16", 32)), skvq(*model, {}, with("skvq", 32));
  const Tensor a = f16.feed(ids, true), b = skvq.feed(ids, true);
  for (int64_t i = 0; i < a.numel(); ++i) ASSERT_NEAR(a.ptr<float>()[i], b.ptr<float>()[i], 1e-4) << i;
}

TEST(KvWindowSession, LongRaggedRunsSealBlocksAndStayClose) {
  auto model = tiny_decoder(5, 256, 64);
  const int V = static_cast<int>(model->config().vocab);
  const auto ids = some_tokens(250, V);
  Session f32(*model, {}, with("f32", 250)), skvq(*model, {}, with("skvq", 250)), int2(*model, {}, with("int2", 250));
  const Tensor want = f32.feed(ids, true), got = skvq.feed(ids, true), rtn = int2.feed(ids, true);
  double err_skvq = 0, err_int2 = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    ASSERT_TRUE(std::isfinite(got.ptr<float>()[i]));
    err_skvq += std::fabs(got.ptr<float>()[i] - want.ptr<float>()[i]);
    err_int2 += std::fabs(rtn.ptr<float>()[i] - want.ptr<float>()[i]);
  }
  EXPECT_GT(err_skvq, 0.0);       // the body is 2-bit
  EXPECT_LT(err_skvq, err_int2);  // sinks and window in f32 beat plain 2-bit codes
  // Decoding token by token after a chunked prompt: blocks seal step by step.
  Session step(*model, {}, with("skvq", 7));
  step.feed(std::span(ids).first(200));
  for (int i = 200; i < 250; ++i) {
    const Tensor l = step.feed(std::span(ids).subspan(i, 1));
    ASSERT_TRUE(std::isfinite(l.ptr<float>()[0]));
  }
  EXPECT_EQ(step.length(), 250);
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
