// cpu.ref of the classifier's ops (ops/classifier_ops.h): naive loops that state each op's semantics,
// double accumulation, single-threaded. The oracle for their future CUDA variants; the classifier's
// golden test checks them against PyTorch.
#include <algorithm>
#include <cmath>
#include <limits>

#include "backends/cpu/register.h"
#include "ops/classifier_dispatch.h"

namespace kestrel::backends::cpu {
namespace {

using namespace ops;

bool f32_only(std::initializer_list<const Tensor*> ts, std::string* why) {
  for (const Tensor* t : ts)
    if (t && t->dtype != DType::F32) {
      if (why) *why = "the classifier's reference ops take f32 tensors, got " + t->describe();
      return false;
    }
  return true;
}

double sigmoid_of(double x) {
  return 1.0 / (1.0 + std::exp(-x));
}

void ref_lstm(const LstmArgs& a, const Context&) {
  const int64_t H = a.w_hh.cols(), D = a.out.cols();
  const float* w = a.w_hh.ptr<float>();
  std::vector<double> h(H), c(H), z(4 * H);
  for (const EncoderSeq& s : a.seqs) {
    std::fill(h.begin(), h.end(), 0.0);
    std::fill(c.begin(), c.end(), 0.0);
    for (int32_t step = 0; step < s.len; ++step) {
      const int64_t t = s.begin + (a.reverse ? s.len - 1 - step : step);
      const float* g = a.gates.ptr<float>() + t * 4 * H;
      for (int64_t r = 0; r < 4 * H; ++r) {
        double acc = g[r];
        for (int64_t k = 0; k < H; ++k) acc += static_cast<double>(w[r * H + k]) * h[k];
        z[r] = acc;
      }
      float* out = a.out.ptr<float>() + t * D + a.col;
      for (int64_t j = 0; j < H; ++j) {
        const double i = sigmoid_of(z[j]), f = sigmoid_of(z[H + j]), gg = std::tanh(z[2 * H + j]),
                     o = sigmoid_of(z[3 * H + j]);
        c[j] = f * c[j] + i * gg;
        h[j] = o * std::tanh(c[j]);
        out[j] = static_cast<float>(h[j]);
      }
    }
  }
}

void ref_mean_rows(const MeanRowsArgs& a, const Context&) {
  const int64_t D = a.x.cols();
  for (size_t s = 0; s < a.seqs.size(); ++s) {
    const EncoderSeq& q = a.seqs[s];
    for (int64_t d = 0; d < D; ++d) {
      double acc = 0;
      for (int32_t r = 0; r < q.len; ++r) acc += a.x.ptr<float>()[(q.begin + r) * D + d];
      a.y.ptr<float>()[static_cast<int64_t>(s) * D + d] = q.len ? static_cast<float>(acc / q.len) : 0.f;
    }
  }
}

void ref_conv2d(const Conv2dArgs& a, const Context&) {
  const int64_t N = a.x.dim(0), C = a.x.dim(1), H = a.x.dim(2), W = a.x.dim(3);
  const int64_t O = a.w.dim(0), KH = a.w.dim(2), KW = a.w.dim(3), OH = a.y.dim(2), OW = a.y.dim(3);
  const float *x = a.x.ptr<float>(), *w = a.w.ptr<float>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t i = 0; i < OH; ++i)
        for (int64_t j = 0; j < OW; ++j) {
          double acc = a.bias ? a.bias->ptr<float>()[o] : 0.0;
          for (int64_t c = 0; c < C; ++c)
            for (int64_t u = 0; u < KH; ++u) {
              const int64_t yy = i * a.p.stride + u - a.p.pad;
              if (yy < 0 || yy >= H) continue;
              for (int64_t v = 0; v < KW; ++v) {
                const int64_t xx = j * a.p.stride + v - a.p.pad;
                if (xx < 0 || xx >= W) continue;
                acc += static_cast<double>(w[((o * C + c) * KH + u) * KW + v]) * x[((n * C + c) * H + yy) * W + xx];
              }
            }
          if (a.p.relu) acc = std::max(acc, 0.0);
          a.y.ptr<float>()[((n * O + o) * OH + i) * OW + j] = static_cast<float>(acc);
        }
}

void ref_max_pool2d(const MaxPool2dArgs& a, const Context&) {
  const int64_t NC = a.x.dim(0) * a.x.dim(1), H = a.x.dim(2), W = a.x.dim(3), OH = a.y.dim(2), OW = a.y.dim(3);
  const int k = a.kernel;
  for (int64_t p = 0; p < NC; ++p)
    for (int64_t i = 0; i < OH; ++i)
      for (int64_t j = 0; j < OW; ++j) {
        float m = -std::numeric_limits<float>::infinity();
        for (int u = 0; u < k; ++u)
          for (int v = 0; v < k; ++v) m = std::max(m, a.x.ptr<float>()[(p * H + i * k + u) * W + j * k + v]);
        a.y.ptr<float>()[(p * OH + i) * OW + j] = m;
      }
}

// Mean and max of `count` values `stride` apart from `x`.
std::pair<float, float> mean_max(const float* x, int64_t count, int64_t stride) {
  double sum = 0;
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < count; ++i) {
    sum += x[i * stride];
    mx = std::max(mx, x[i * stride]);
  }
  return {static_cast<float>(sum / count), mx};
}

void ref_global_pool(const UnaryArgs& a, const Context&) {
  const int64_t NC = a.x.dim(0) * a.x.dim(1), HW = a.x.dim(2) * a.x.dim(3);
  for (int64_t p = 0; p < NC; ++p) {
    const auto [mean, mx] = mean_max(a.x.ptr<float>() + p * HW, HW, 1);
    a.y.ptr<float>()[p] = mean;
    a.y.ptr<float>()[NC + p] = mx;
  }
}

void ref_channel_pool(const UnaryArgs& a, const Context&) {
  const int64_t N = a.x.dim(0), C = a.x.dim(1), HW = a.x.dim(2) * a.x.dim(3);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t p = 0; p < HW; ++p) {
      const auto [mean, mx] = mean_max(a.x.ptr<float>() + n * C * HW + p, C, HW);
      a.y.ptr<float>()[(n * 2) * HW + p] = mean;
      a.y.ptr<float>()[(n * 2 + 1) * HW + p] = mx;
    }
}

void ref_relu(const UnaryArgs& a, const Context&) {
  for (int64_t i = 0; i < a.y.numel(); ++i) a.y.ptr<float>()[i] = std::max(a.x.ptr<float>()[i], 0.f);
}

void ref_sigmoid(const UnaryArgs& a, const Context&) {
  for (int64_t i = 0; i < a.y.numel(); ++i) a.y.ptr<float>()[i] = static_cast<float>(sigmoid_of(a.x.ptr<float>()[i]));
}

void ref_mul_broadcast(const BinaryArgs& a, const Context&) {
  const Tensor &x = a.a, &s = a.b;
  int64_t sstride[4];  // s's strides, 0 along its broadcast dims
  int64_t stride = 1;
  for (int d = 3; d >= 0; --d) {
    sstride[d] = s.dim(d) == 1 ? 0 : stride;
    stride *= s.dim(d);
  }
  int64_t i = 0;
  for (int64_t n = 0; n < x.dim(0); ++n)
    for (int64_t c = 0; c < x.dim(1); ++c)
      for (int64_t h = 0; h < x.dim(2); ++h)
        for (int64_t w = 0; w < x.dim(3); ++w, ++i)
          a.y.ptr<float>()[i] =
              x.ptr<float>()[i] * s.ptr<float>()[n * sstride[0] + c * sstride[1] + h * sstride[2] + w * sstride[3]];
}

void ref_concat_tiled(const BinaryArgs& a, const Context&) {
  const int64_t N = a.a.dim(0), C = a.a.dim(1), HW = a.a.dim(2) * a.a.dim(3), D = a.b.cols();
  for (int64_t n = 0; n < N; ++n) {
    float* y = a.y.ptr<float>() + n * (C + D) * HW;
    std::copy_n(a.a.ptr<float>() + n * C * HW, C * HW, y);
    for (int64_t d = 0; d < D; ++d) std::fill_n(y + (C + d) * HW, HW, a.b.ptr<float>()[n * D + d]);
  }
}

}  // namespace

void register_classifier_variants(ClassifierRegistries& r) {
  constexpr int kRefPriority = 0;
  const auto unary = [](const UnaryArgs& a, std::string* why) { return f32_only({&a.x, &a.y}, why); };
  const auto binary = [](const BinaryArgs& a, std::string* why) { return f32_only({&a.a, &a.b, &a.y}, why); };
  r.lstm.add({"cpu.ref", Device::Cpu, kRefPriority,
              [](const LstmArgs& a, std::string* why) {
                return f32_only({&a.gates, &a.w_hh, &a.out}, why);
              },
              ref_lstm});
  r.mean_rows.add({"cpu.ref", Device::Cpu, kRefPriority,
                   [](const MeanRowsArgs& a, std::string* why) {
                     return f32_only({&a.x, &a.y}, why);
                   },
                   ref_mean_rows});
  r.conv2d.add({"cpu.ref", Device::Cpu, kRefPriority,
                [](const Conv2dArgs& a, std::string* why) {
                  return f32_only({&a.x, &a.w, a.bias, &a.y}, why);
                },
                ref_conv2d});
  r.max_pool2d.add({"cpu.ref", Device::Cpu, kRefPriority,
                    [](const MaxPool2dArgs& a, std::string* why) {
                      return f32_only({&a.x, &a.y}, why);
                    },
                    ref_max_pool2d});
  r.global_pool.add({"cpu.ref", Device::Cpu, kRefPriority, unary, ref_global_pool});
  r.channel_pool.add({"cpu.ref", Device::Cpu, kRefPriority, unary, ref_channel_pool});
  r.relu.add({"cpu.ref", Device::Cpu, kRefPriority, unary, ref_relu});
  r.sigmoid.add({"cpu.ref", Device::Cpu, kRefPriority, unary, ref_sigmoid});
  r.mul_broadcast.add({"cpu.ref", Device::Cpu, kRefPriority, binary, ref_mul_broadcast});
  r.concat_tiled.add({"cpu.ref", Device::Cpu, kRefPriority, binary, ref_concat_tiled});
}

}  // namespace kestrel::backends::cpu
