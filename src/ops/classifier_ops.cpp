#include "core/error.h"
#include "ops/classifier_dispatch.h"

namespace kestrel::ops {

ClassifierRegistries& classifier_registries() {
  static ClassifierRegistries r;
  return r;
}

namespace {
// Sequences must be disjoint row ranges inside [0, T); an overlap would only make results order-dependent,
// a range outside the tensor would read or write out of bounds.
void check_seqs(const char* op, const std::vector<EncoderSeq>& seqs, int64_t T) {
  int64_t end = 0;
  for (const EncoderSeq& s : seqs) {
    KS_CHECK(s.begin >= end && s.len >= 0 && int64_t{s.begin} + s.len <= T,
             "{}: sequence rows [{}, {}) overlap the previous sequence or fall outside the {} rows", op, s.begin,
             int64_t{s.begin} + s.len, T);
    end = int64_t{s.begin} + s.len;
  }
}

void check_nchw(const char* op, const char* name, const Tensor& t) {
  KS_CHECK(t.ndim() == 4, "{}: {} must be an NCHW image tensor, got {}", op, name, t.describe());
}
}  // namespace

void lstm(const Context& ctx, const Tensor& gates, const Tensor& w_hh, const std::vector<EncoderSeq>& seqs,
          bool reverse, int64_t col, Tensor& out) {
  const int64_t H = w_hh.cols();
  KS_CHECK(w_hh.ndim() == 2 && w_hh.rows() == 4 * H && gates.ndim() == 2 && gates.cols() == 4 * H && out.ndim() == 2 &&
               out.rows() == gates.rows() && col >= 0 && col + H <= out.cols() && gates.data != out.data,
           "lstm shape mismatch: gates {} w_hh {} out {} col {}", gates.describe(), w_hh.describe(), out.describe(),
           col);
  check_seqs("lstm", seqs, gates.rows());
  classifier_registries().lstm.run({gates, w_hh, seqs, reverse, col, out}, ctx);
}

void mean_rows(const Context& ctx, const Tensor& x, const std::vector<EncoderSeq>& seqs, Tensor& y) {
  KS_CHECK(x.ndim() == 2 && y.ndim() == 2 && y.cols() == x.cols() && y.rows() == static_cast<int64_t>(seqs.size()) &&
               x.data != y.data,
           "mean_rows shape mismatch: x {} y {} for {} sequences", x.describe(), y.describe(), seqs.size());
  check_seqs("mean_rows", seqs, x.rows());
  classifier_registries().mean_rows.run({x, seqs, y}, ctx);
}

void conv2d(const Context& ctx, const Tensor& x, const Tensor& w, const Tensor* bias, const Conv2dParams& p,
            Tensor& y) {
  check_nchw("conv2d", "x", x);
  check_nchw("conv2d", "w", w);
  check_nchw("conv2d", "y", y);
  KS_CHECK(p.stride >= 1 && p.pad >= 0, "conv2d: stride {} must be >= 1 and pad {} >= 0", p.stride, p.pad);
  const int64_t oh = (x.dim(2) + 2 * p.pad - w.dim(2)) / p.stride + 1,
                ow = (x.dim(3) + 2 * p.pad - w.dim(3)) / p.stride + 1;
  KS_CHECK(w.dim(1) == x.dim(1) && x.dim(2) + 2 * p.pad >= w.dim(2) && x.dim(3) + 2 * p.pad >= w.dim(3) &&
               y.shape == std::vector<int64_t>({x.dim(0), w.dim(0), oh, ow}) && x.data != y.data &&
               (!bias || bias->numel() == w.dim(0)),
           "conv2d shape mismatch: x {} w {} bias {} y {} (stride {}, pad {})", x.describe(), w.describe(),
           bias ? bias->describe() : "none", y.describe(), p.stride, p.pad);
  classifier_registries().conv2d.run({x, w, bias, p, y}, ctx);
}

void max_pool2d(const Context& ctx, const Tensor& x, int kernel, Tensor& y) {
  check_nchw("max_pool2d", "x", x);
  KS_CHECK(kernel >= 1 && x.dim(2) >= kernel && x.dim(3) >= kernel &&
               y.shape == std::vector<int64_t>({x.dim(0), x.dim(1), x.dim(2) / kernel, x.dim(3) / kernel}),
           "max_pool2d shape mismatch: x {} kernel {} y {}", x.describe(), kernel, y.describe());
  classifier_registries().max_pool2d.run({x, kernel, y}, ctx);
}

void global_pool(const Context& ctx, const Tensor& x, Tensor& y) {
  check_nchw("global_pool", "x", x);
  KS_CHECK(x.dim(2) * x.dim(3) > 0 && y.shape == std::vector<int64_t>({2, x.dim(0), x.dim(1)}),
           "global_pool shape mismatch: x {} y {} (want [2, N, C] over pixels)", x.describe(), y.describe());
  classifier_registries().global_pool.run({x, y}, ctx);
}

void channel_pool(const Context& ctx, const Tensor& x, Tensor& y) {
  check_nchw("channel_pool", "x", x);
  KS_CHECK(x.dim(1) > 0 && y.shape == std::vector<int64_t>({x.dim(0), 2, x.dim(2), x.dim(3)}),
           "channel_pool shape mismatch: x {} y {} (want [N, 2, H, W])", x.describe(), y.describe());
  classifier_registries().channel_pool.run({x, y}, ctx);
}

void relu(const Context& ctx, const Tensor& x, Tensor& y) {
  KS_CHECK(x.numel() == y.numel(), "relu shape mismatch: x {} y {}", x.describe(), y.describe());
  classifier_registries().relu.run({x, y}, ctx);
}

void sigmoid(const Context& ctx, const Tensor& x, Tensor& y) {
  KS_CHECK(x.numel() == y.numel(), "sigmoid shape mismatch: x {} y {}", x.describe(), y.describe());
  classifier_registries().sigmoid.run({x, y}, ctx);
}

void mul_broadcast(const Context& ctx, const Tensor& x, const Tensor& s, Tensor& y) {
  check_nchw("mul_broadcast", "x", x);
  bool ok = s.ndim() == 4 && y.shape == x.shape && s.data != y.data;
  for (int d = 0; ok && d < 4; ++d) ok = s.dim(d) == x.dim(d) || s.dim(d) == 1;
  KS_CHECK(ok, "mul_broadcast shape mismatch: x {} s {} y {} (s's dims must be x's or 1)", x.describe(), s.describe(),
           y.describe());
  classifier_registries().mul_broadcast.run({x, s, y}, ctx);
}

void concat_tiled(const Context& ctx, const Tensor& x, const Tensor& v, Tensor& y) {
  check_nchw("concat_tiled", "x", x);
  KS_CHECK(v.ndim() == 2 && v.rows() == x.dim(0) &&
               y.shape == std::vector<int64_t>({x.dim(0), x.dim(1) + v.cols(), x.dim(2), x.dim(3)}) &&
               y.data != x.data && y.data != v.data,
           "concat_tiled shape mismatch: x {} v {} y {}", x.describe(), v.describe(), y.describe());
  classifier_registries().concat_tiled.run({x, v, y}, ctx);
}

}  // namespace kestrel::ops
