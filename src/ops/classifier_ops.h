// The ops of the multimodal sentiment classifier (model/sentiment_classifier.h): an LSTM's recurrence,
// 2-D convolution and pooling over NCHW images, and the pieces of CBAM attention. Apart from ops.h so the
// decoder's translation units do not depend on them; dispatched the same way (classifier_dispatch.h).
//
// Conventions as ops.h: f32 activations, row-major; images are NCHW ([N, C, H, W], W innermost);
// every tensor of a call lives on ctx.device. Only cpu.ref implements them so far.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "ops/context.h"
#include "ops/ops.h"

namespace kestrel::ops {

// The recurrence of one LSTM direction over sequences stacked as rows (PyTorch's gate order i, f, g, o):
//   i, f, o = sigmoid(gates_t + W_hh h), g = tanh(gates_t + W_hh h), c = f c + i g, h = o tanh(c)
// with h and c zero at each sequence's start. seqs: disjoint row ranges in row order, as the encoder
// stacks texts (checked). gates: [T, 4H], the input projection x W_ih^T + b_ih + b_hh
// (an ops::matmul); w_hh: f32 [4H, H]. reverse: each sequence runs from its last row to its first (the
// backward half of a BiLSTM). out: [T, D] with D >= col + H; the op writes h into columns [col, col + H)
// of each sequence's rows (both directions of a BiLSTM into one [T, 2H]) and leaves the rest as it is.
void lstm(const Context& ctx, const Tensor& gates, const Tensor& w_hh, const std::vector<EncoderSeq>& seqs,
          bool reverse, int64_t col, Tensor& out);

// y[s, :] = the mean of x's rows of sequence s (mean pooling over tokens); seqs as lstm's. x: [T, D];
// y: [S, D]; a sequence of no rows gives zeros.
void mean_rows(const Context& ctx, const Tensor& x, const std::vector<EncoderSeq>& seqs, Tensor& y);

struct Conv2dParams {
  int stride = 1;
  int pad = 0;        // zeros on every side
  bool relu = false;  // y = max(y, 0) after the bias (conv-BN-ReLU blocks, BN folded into w and bias)
};
// Cross-correlation as torch.nn.Conv2d: y[n, o, i, j] = bias[o] + sum_{c, u, v} w[o, c, u, v] *
// x[n, c, i * stride + u - pad, j * stride + v - pad]. x: [N, C, H, W]; w: f32 [O, C, KH, KW]; bias: f32 [O]
// or null; y: [N, O, (H + 2 pad - KH) / stride + 1, (W + 2 pad - KW) / stride + 1]; y must not alias x.
void conv2d(const Context& ctx, const Tensor& x, const Tensor& w, const Tensor* bias, const Conv2dParams& p, Tensor& y);

// Max over non-overlapping kernel x kernel windows (stride = kernel, no padding, a ragged edge dropped as
// torch.nn.MaxPool2d(kernel) does). x: [N, C, H, W]; y: [N, C, H / kernel, W / kernel].
void max_pool2d(const Context& ctx, const Tensor& x, int kernel, Tensor& y);

// Per channel, over all pixels: y[0, n, c] = mean, y[1, n, c] = max of x[n, c, :, :]. x: [N, C, H, W];
// y: [2, N, C] (the two halves are the rows CBAM's shared MLP runs on, and the mean half is global
// average pooling).
void global_pool(const Context& ctx, const Tensor& x, Tensor& y);

// Per pixel, over all channels: y[n, 0, i, j] = mean, y[n, 1, i, j] = max of x[n, :, i, j]. x: [N, C, H, W];
// y: [N, 2, H, W] (CBAM's spatial attention input).
void channel_pool(const Context& ctx, const Tensor& x, Tensor& y);

// Elementwise max(x, 0) and 1 / (1 + exp(-x)); same shapes; y may alias x.
void relu(const Context& ctx, const Tensor& x, Tensor& y);
void sigmoid(const Context& ctx, const Tensor& x, Tensor& y);

// y = x * s with s broadcast (numpy rules over 4-D shapes): x, y: [N, C, H, W]; s: 4-D, each dim equal to
// x's or 1 ([N, C, 1, 1]: a weight per channel; [N, 1, H, W]: a weight per pixel). y may alias x.
void mul_broadcast(const Context& ctx, const Tensor& x, const Tensor& s, Tensor& y);

// y = x's channels followed by v's values repeated at every pixel (a vector tiled over an image's grid):
// x: [N, C, H, W]; v: [N, D]; y: [N, C + D, H, W], must not alias either.
void concat_tiled(const Context& ctx, const Tensor& x, const Tensor& v, Tensor& y);

}  // namespace kestrel::ops
