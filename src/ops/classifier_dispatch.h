// Argument packs and registries of the classifier's ops (classifier_ops.h), dispatched as ops.h's are.
#pragma once

#include "ops/classifier_ops.h"
#include "ops/dispatch.h"

namespace kestrel::ops {

struct LstmArgs {
  const Tensor& gates;
  const Tensor& w_hh;
  const std::vector<EncoderSeq>& seqs;
  bool reverse;
  int64_t col;
  Tensor& out;
};
struct MeanRowsArgs {
  const Tensor& x;
  const std::vector<EncoderSeq>& seqs;
  Tensor& y;
};
struct Conv2dArgs {
  const Tensor& x;
  const Tensor& w;
  const Tensor* bias;
  const Conv2dParams& p;
  Tensor& y;
};
struct MaxPool2dArgs {
  const Tensor& x;
  int kernel;
  Tensor& y;
};
// global_pool, channel_pool, relu, sigmoid: UnaryArgs (dispatch.h). mul_broadcast, concat_tiled: BinaryArgs.

struct ClassifierRegistries {
  Registry<LstmArgs> lstm{"lstm"};
  Registry<MeanRowsArgs> mean_rows{"mean_rows"};
  Registry<Conv2dArgs> conv2d{"conv2d"};
  Registry<MaxPool2dArgs> max_pool2d{"max_pool2d"};
  Registry<UnaryArgs> global_pool{"global_pool"};
  Registry<UnaryArgs> channel_pool{"channel_pool"};
  Registry<UnaryArgs> relu{"relu"};
  Registry<UnaryArgs> sigmoid{"sigmoid"};
  Registry<BinaryArgs> mul_broadcast{"mul_broadcast"};
  Registry<BinaryArgs> concat_tiled{"concat_tiled"};
};

// Empty until backends::install() registers the built-in backends' variants.
ClassifierRegistries& classifier_registries();

}  // namespace kestrel::ops
