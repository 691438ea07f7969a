// The classifier ops' CPU reference (ops/classifier_ops.h) on cases worked out by hand, and their shape
// checks. The whole chain is checked against PyTorch by tests/model/classifier_golden_test.cpp.
#include "ops/classifier_ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "backends/backends.h"
#include "core/error.h"

namespace kestrel {
namespace {

Tensor host(std::vector<int64_t> shape, std::vector<float> values) {
  Tensor t = Tensor::empty_host(DType::F32, std::move(shape));
  EXPECT_EQ(static_cast<size_t>(t.numel()), values.size());
  std::copy(values.begin(), values.end(), t.ptr<float>());
  return t;
}

std::vector<float> values(const Tensor& t) {
  return {t.ptr<float>(), t.ptr<float>() + t.numel()};
}

class ClassifierOps : public testing::Test {
 protected:
  ops::Context ctx_ = backends::make_context(Device::Cpu);
};

double sig(double x) {
  return 1 / (1 + std::exp(-x));
}

TEST_F(ClassifierOps, LstmRunsEachSequenceFromZeroStateInEitherDirection) {
  // H = 1: gates rows are (i, f, g, o) pre-activations; w_hh adds w * h_prev to each.
  const Tensor gates = host({3, 4}, {0.5f, 0.2f, -0.3f, 1.0f, 0.1f, -0.4f, 0.7f, 0.2f, 1.f, 1.f, 1.f, 1.f});
  const Tensor w_hh = host({4, 1}, {0.3f, -0.2f, 0.5f, 0.1f});
  const std::vector<ops::EncoderSeq> seqs = {{0, 2}, {2, 1}};
  auto step = [](const float* z, double h, double c, double* h_out) {
    const double i = sig(z[0] + 0.3 * h), f = sig(z[1] - 0.2 * h), g = std::tanh(z[2] + 0.5 * h),
                 o = sig(z[3] + 0.1 * h);
    const double c2 = f * c + i * g;
    *h_out = o * std::tanh(c2);
    return c2;
  };
  const float* z = gates.ptr<float>();
  double h0, h1, h2;
  double c = step(z, 0, 0, &h0);
  step(z + 4, h0, c, &h1);
  step(z + 8, 0, 0, &h2);  // the second sequence starts from zero state

  Tensor out = host({3, 3}, std::vector<float>(9, 7.f));
  ops::lstm(ctx_, gates, w_hh, seqs, false, 1, out);
  EXPECT_EQ(out.ptr<float>()[0], 7.f);  // columns outside [col, col + H) are left alone
  EXPECT_NEAR(out.ptr<float>()[1], h0, 1e-6);
  EXPECT_NEAR(out.ptr<float>()[4], h1, 1e-6);
  EXPECT_NEAR(out.ptr<float>()[7], h2, 1e-6);

  double r1, r0;  // reverse: row 1 first, then row 0
  c = step(z + 4, 0, 0, &r1);
  step(z, r1, c, &r0);
  ops::lstm(ctx_, gates, w_hh, seqs, true, 2, out);
  EXPECT_NEAR(out.ptr<float>()[5], r1, 1e-6);
  EXPECT_NEAR(out.ptr<float>()[2], r0, 1e-6);
  EXPECT_NEAR(out.ptr<float>()[8], h2, 1e-6);
}

TEST_F(ClassifierOps, Conv2dPadsWithZerosAndAppliesBiasThenRelu) {
  const Tensor x = host({1, 1, 3, 3}, std::vector<float>(9, 1.f));
  const Tensor w = host({2, 1, 3, 3}, {1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1, -1, -1});
  const Tensor b = host({2}, {1.f, 5.f});
  Tensor y = Tensor::empty_host(DType::F32, {1, 2, 3, 3});
  ops::conv2d(ctx_, x, w, &b, {.stride = 1, .pad = 1, .relu = true}, y);
  EXPECT_EQ(values(y), (std::vector<float>{5, 7, 5, 7, 10, 7, 5, 7, 5, 1, 0, 1, 0, 0, 0, 1, 0, 1}));
  Tensor s = Tensor::empty_host(DType::F32, {1, 2, 1, 1});
  ops::conv2d(ctx_, x, w, nullptr, {.stride = 2, .pad = 0, .relu = false}, s);
  EXPECT_EQ(values(s), (std::vector<float>{9, -9}));
}

TEST_F(ClassifierOps, PoolsOverWindowsPixelsAndChannels) {
  const Tensor x = host({1, 2, 3, 2}, {1, 2, 3, 4, 5, 6, -1, -2, -3, -4, -5, -6});
  Tensor m = Tensor::empty_host(DType::F32, {1, 2, 1, 1});
  ops::max_pool2d(ctx_, x, 2, m);  // the ragged third row is dropped, as torch does
  EXPECT_EQ(values(m), (std::vector<float>{4, -1}));
  Tensor g = Tensor::empty_host(DType::F32, {2, 1, 2});
  ops::global_pool(ctx_, x, g);
  EXPECT_EQ(values(g), (std::vector<float>{3.5f, -3.5f, 6, -1}));
  Tensor c = Tensor::empty_host(DType::F32, {1, 2, 3, 2});
  ops::channel_pool(ctx_, x, c);
  EXPECT_EQ(values(c), (std::vector<float>{0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6}));
  Tensor r = Tensor::empty_host(DType::F32, {2, 2});
  ops::mean_rows(ctx_, host({3, 2}, {1, 2, 3, 4, 5, 6}), {{0, 3}, {3, 0}}, r);
  EXPECT_EQ(values(r), (std::vector<float>{3, 4, 0, 0}));  // an empty sequence pools to zeros
}

TEST_F(ClassifierOps, ElementwiseBroadcastAndTiling) {
  Tensor x = host({1, 2, 1, 2}, {1, -2, 3, -4});
  ops::mul_broadcast(ctx_, x, host({1, 2, 1, 1}, {10, 100}), x);  // per channel, in place
  EXPECT_EQ(values(x), (std::vector<float>{10, -20, 300, -400}));
  ops::mul_broadcast(ctx_, x, host({1, 1, 1, 2}, {1, 0.5f}), x);  // per pixel
  EXPECT_EQ(values(x), (std::vector<float>{10, -10, 300, -200}));
  ops::relu(ctx_, x, x);
  EXPECT_EQ(values(x), (std::vector<float>{10, 0, 300, 0}));
  Tensor s = Tensor::empty_host(DType::F32, {2});
  ops::sigmoid(ctx_, host({2}, {0, -1000}), s);
  EXPECT_EQ(values(s), (std::vector<float>{0.5f, 0}));
  Tensor y = Tensor::empty_host(DType::F32, {1, 3, 1, 2});
  ops::concat_tiled(ctx_, host({1, 1, 1, 2}, {1, 2}), host({1, 2}, {8, 9}), y);
  EXPECT_EQ(values(y), (std::vector<float>{1, 2, 8, 8, 9, 9}));
}

TEST_F(ClassifierOps, ShapeMismatchesThrowInsteadOfReadingOutOfBounds) {
  const Tensor x = Tensor::empty_host(DType::F32, {1, 3, 4, 4});
  Tensor y = Tensor::empty_host(DType::F32, {1, 2, 4, 4});
  const Tensor w = Tensor::empty_host(DType::F32, {2, 2, 3, 3});  // 2 input channels, x has 3
  EXPECT_THROW(ops::conv2d(ctx_, x, w, nullptr, {.stride = 1, .pad = 1}, y), Error);
  EXPECT_THROW(ops::conv2d(ctx_, x, Tensor::empty_host(DType::F32, {2, 3, 3, 3}), nullptr, {.stride = 0}, y), Error);
  const Tensor gates = Tensor::empty_host(DType::F32, {4, 8});
  const Tensor w_hh = Tensor::empty_host(DType::F32, {8, 2});
  Tensor out = Tensor::empty_host(DType::F32, {4, 4});
  EXPECT_THROW(ops::lstm(ctx_, gates, w_hh, {{2, 3}}, false, 0, out), Error);          // rows past T
  EXPECT_THROW(ops::lstm(ctx_, gates, w_hh, {{0, 2}, {1, 2}}, false, 0, out), Error);  // overlap
  EXPECT_THROW(ops::lstm(ctx_, gates, w_hh, {{0, 4}}, false, 3, out), Error);          // columns past D
  Tensor pooled = Tensor::empty_host(DType::F32, {1, 3, 3, 3});
  EXPECT_THROW(ops::max_pool2d(ctx_, x, 2, pooled), Error);
  EXPECT_THROW(ops::mul_broadcast(ctx_, x, Tensor::empty_host(DType::F32, {1, 2, 1, 1}), y), Error);
  Tensor tiled = Tensor::empty_host(DType::F32, {1, 4, 4, 4});
  EXPECT_THROW(ops::concat_tiled(ctx_, x, Tensor::empty_host(DType::F32, {2, 1}), tiled), Error);
}

}  // namespace
}  // namespace kestrel
