// The multimodal sentiment classifier of docs/classifier.md (issue 20): MiniLM token features -> BiLSTM ->
// mean over tokens; image -> CNN; the text vector tiled over the CNN's grid and concatenated as channels ->
// conv + CBAM (channel then spatial attention) -> global average pool -> linear -> class logits.
// Trained and exported by scripts/train/sentiment/train.py (its fused variant): config.json + one
// model.safetensors under the PyTorch state_dict's names; each BatchNorm is folded into its conv at load.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/linear.h"
#include "core/tensor.h"
#include "formats/pnm.h"
#include "model/encoder.h"
#include "ops/context.h"
#include "ops/ops.h"

namespace kestrel {

struct SentimentClassifierConfig {
  int text_dim = 384;  // the encoder's hidden size
  int lstm_hidden = 32;
  int image_size = 32;  // square RGB images
  int image_channels[2] = {16, 32};
  int fuse_channels = 64;
  int cbam_reduction = 4;
  int spatial_kernel = 7;
  int max_tokens = 128;  // texts are truncated to this many tokens, [CLS] and [SEP] included
  float bn_eps = 1e-5f;
  float image_scale = 1.f / 255;  // pixel value -> model input
  std::vector<std::string> classes;
  std::string encoder;                         // the encoder directory's name, e.g. all-MiniLM-L6-v2
  int grid() const { return image_size / 4; }  // the CNN's output grid (two 2x2 max pools)
};

// The classifier's own weights (everything after the encoder) and its forward pass.
class SentimentHead {
 public:
  // Reads `dir`/config.json and `dir`/model.safetensors. Throws kestrel::Error for a config that is not the
  // fused kestrel_sentiment_cbam classifier, a missing tensor or one of the wrong shape.
  static std::unique_ptr<SentimentHead> load(const std::string& dir);
  const SentimentClassifierConfig& config() const { return config_; }

  // Logits [N, classes] (host f32) of N text/image pairs. token_features: f32 [T, text_dim], the
  // encoder's rows of the texts stacked, text i being rows seqs[i]; images: f32 [N, 3, S, S] model inputs
  // (image_input()). Both on ctx.device.
  Tensor forward(const ops::Context& ctx, const Tensor& token_features, const std::vector<ops::EncoderSeq>& seqs,
                 const Tensor& images) const;

 private:
  struct Conv {  // BatchNorm folded in
    Tensor w, b;
  };
  struct Dense {
    Linear w;
    Tensor b;
  };
  struct LstmDirection {
    Dense input;  // W_ih with b_ih + b_hh
    Tensor w_hh;
  };
  SentimentClassifierConfig config_;
  LstmDirection lstm_[2];  // forward, reverse
  Conv block1_, block2_, fuse_;
  Dense mlp1_, mlp2_, head_;
  Tensor spatial_;  // [1, 2, k, k], no bias
};

// An image as the model's input: f32 [1, 3, S, S] (NCHW), pixel * image_scale. Throws unless the image is
// the S x S the model was trained on.
Tensor image_input(const RgbImage& img, const SentimentClassifierConfig& c);

// The encoder, its tokenizer and the head: texts and images in, logits out.
struct SentimentClassifier {
  std::unique_ptr<EmbeddingModel> encoder;
  std::unique_ptr<SentimentHead> head;

  // Logits [N, classes] of N (text, image) pairs, run as one batch.
  Tensor logits(const ops::Context& ctx, std::span<const std::string_view> texts,
                std::span<const RgbImage> images) const;
};

// Loads the head from `dir` and the encoder from `encoder_dir`; an empty encoder_dir means `dir`/encoder
// if present, else $KESTREL_CACHE/models/<config's encoder> (~/.cache/kestrel when unset).
std::unique_ptr<SentimentClassifier> load_sentiment_classifier(const std::string& dir,
                                                               const std::string& encoder_dir = "");

// Softmax of each row of logits, in double.
std::vector<std::vector<double>> softmax_rows(const Tensor& logits);

}  // namespace kestrel
