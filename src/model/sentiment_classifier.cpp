#include "model/sentiment_classifier.h"

#include <fmt/ranges.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include "core/convert.h"
#include "core/error.h"
#include "formats/hf_config.h"
#include "formats/safetensors.h"
#include "model/cache_dir.h"
#include "ops/classifier_ops.h"
#include "tokenizer/encoder_inputs.h"

namespace kestrel {
namespace fs = std::filesystem;
namespace {

constexpr const char* kArchitecture = "kestrel_sentiment_cbam";

// Every size of the model is at most 1 << 16 (an image side, a channel count, a token count): larger
// values are a broken config, refused before anything is allocated from them.
int config_int(const nlohmann::json& j, const char* key, int def, const std::string& where) {
  const nlohmann::json* v = json_field(j, key);
  return v ? static_cast<int>(json_int(*v, key, where, 1, 1 << 16)) : def;
}

SentimentClassifierConfig read_config(const std::string& dir) {
  const fs::path path = fs::path(dir) / "config.json";
  KS_CHECK(fs::exists(path),
           "{}: no config.json; a classifier directory holds the config.json and model.safetensors that "
           "scripts/train/sentiment/train.py exports",
           dir);
  const std::string where = path.string();
  const nlohmann::json j = load_json_file(where);
  const std::string arch = json_field_or<std::string>(j, "architecture", "", where);
  KS_CHECK(arch == kArchitecture, "{}: architecture '{}' is not '{}' (scripts/train/sentiment/train.py's export)",
           where, arch, kArchitecture);
  const std::string variant = json_field_or<std::string>(j, "variant", "", where);
  KS_CHECK(variant == "fused",
           "{}: variant '{}': Kestrel runs the fused text+image classifier; the text-only and image-only "
           "variants are training baselines",
           where, variant);
  SentimentClassifierConfig c;
  c.text_dim = config_int(j, "text_dim", c.text_dim, where);
  c.lstm_hidden = config_int(j, "lstm_hidden", c.lstm_hidden, where);
  c.image_size = config_int(j, "image_size", c.image_size, where);
  c.fuse_channels = config_int(j, "fuse_channels", c.fuse_channels, where);
  c.cbam_reduction = config_int(j, "cbam_reduction", c.cbam_reduction, where);
  c.spatial_kernel = config_int(j, "spatial_kernel", c.spatial_kernel, where);
  c.max_tokens = config_int(j, "max_tokens", c.max_tokens, where);
  if (const nlohmann::json* v = json_field(j, "bn_eps")) c.bn_eps = json_float(*v, "bn_eps", where);
  if (const nlohmann::json* v = json_field(j, "image_scale")) c.image_scale = json_float(*v, "image_scale", where);
  const nlohmann::json* ch = json_field(j, "image_channels");
  KS_CHECK(ch && ch->is_array() && ch->size() == 2, "{}: image_channels must be a list of the CNN's two widths", where);
  for (int i = 0; i < 2; ++i)
    c.image_channels[i] = static_cast<int>(json_int((*ch)[i], "image_channels", where, 1, 1 << 16));
  const nlohmann::json* classes = json_field(j, "classes");
  KS_CHECK(classes && classes->is_array() && !classes->empty(), "{}: classes must be a list of class names", where);
  for (const nlohmann::json& name : *classes) {
    KS_CHECK(name.is_string(), "{}: classes must be strings", where);
    c.classes.push_back(name.get<std::string>());
  }
  const int n_classes = config_int(j, "n_classes", static_cast<int>(c.classes.size()), where);
  KS_CHECK(n_classes == static_cast<int>(c.classes.size()), "{}: n_classes {} but {} class names", where, n_classes,
           c.classes.size());
  c.encoder = json_field_or<std::string>(j, "encoder", "all-MiniLM-L6-v2", where);
  KS_CHECK(c.image_size % 4 == 0, "{}: image_size {} must be a multiple of 4 (two 2x2 max pools)", where, c.image_size);
  KS_CHECK(c.fuse_channels % c.cbam_reduction == 0 && c.spatial_kernel % 2 == 1,
           "{}: fuse_channels {} must be a multiple of cbam_reduction {} and spatial_kernel {} odd", where,
           c.fuse_channels, c.cbam_reduction, c.spatial_kernel);
  return c;
}

class Weights {
 public:
  explicit Weights(const std::string& dir) : st_(SafetensorsModel::open_dir(dir)) {}

  // An f32 host tensor of the given shape (converted when the file stores another float type).
  Tensor get(const std::string& name, std::vector<int64_t> shape) const {
    KS_CHECK(st_->has(name), "{}: no tensor '{}'; not a checkpoint of train.py's fused classifier?", st_->path(), name);
    Tensor t = st_->tensor(name);
    KS_CHECK(t.shape == shape, "{}: tensor '{}' is {}, expected [{}] from config.json", st_->path(), name, t.describe(),
             fmt::join(shape, ", "));
    Tensor out = Tensor::empty_host(DType::F32, shape);
    convert_rows(t.dtype, t.data, DType::F32, out.data, t.rows(), t.cols());
    return out;
  }

  // A conv (no bias) followed by BatchNorm (eval: running statistics), folded into one conv with bias:
  // w' = w * gamma / sqrt(var + eps), b' = beta - mean * gamma / sqrt(var + eps).
  Tensor conv_bn(const std::string& conv, const std::string& bn, std::vector<int64_t> shape, float eps,
                 Tensor* bias) const {
    Tensor w = get(conv + ".weight", shape);
    const int64_t O = shape[0], per = w.numel() / O;
    const Tensor g = get(bn + ".weight", {O}), b = get(bn + ".bias", {O}), m = get(bn + ".running_mean", {O}),
                 v = get(bn + ".running_var", {O});
    *bias = Tensor::empty_host(DType::F32, {O});
    for (int64_t o = 0; o < O; ++o) {
      KS_CHECK(v.ptr<float>()[o] + eps > 0, "{}: running_var[{}] is {}; not a trained BatchNorm", bn, o,
               v.ptr<float>()[o]);
      const double s = g.ptr<float>()[o] / std::sqrt(static_cast<double>(v.ptr<float>()[o]) + eps);
      for (int64_t i = 0; i < per; ++i)
        w.ptr<float>()[o * per + i] = static_cast<float>(w.ptr<float>()[o * per + i] * s);
      bias->ptr<float>()[o] = static_cast<float>(b.ptr<float>()[o] - m.ptr<float>()[o] * s);
    }
    return w;
  }

 private:
  std::shared_ptr<SafetensorsModel> st_;
};

Tensor alloc(const ops::Context& ctx, std::vector<int64_t> shape) {
  return ops::allocate(ctx, DType::F32, std::move(shape));
}

}  // namespace

std::unique_ptr<SentimentHead> SentimentHead::load(const std::string& dir) {
  KS_CHECK(fs::is_directory(dir),
           "{}: not a directory; a classifier is a directory with config.json and "
           "model.safetensors (scripts/train/sentiment/train.py exports one)",
           dir);
  auto h = std::unique_ptr<SentimentHead>(new SentimentHead());
  h->config_ = read_config(dir);
  const SentimentClassifierConfig& c = h->config_;
  const Weights w(dir);
  const int64_t H = c.lstm_hidden, E = c.text_dim, c1 = c.image_channels[0], c2 = c.image_channels[1];
  const int64_t F = c.fuse_channels, R = F / c.cbam_reduction, K = static_cast<int64_t>(c.classes.size());
  for (int d = 0; d < 2; ++d) {
    const std::string sfx = d ? "_l0_reverse" : "_l0";
    Tensor b = w.get("text.lstm.bias_ih" + sfx, {4 * H});
    const Tensor b_hh = w.get("text.lstm.bias_hh" + sfx, {4 * H});
    for (int64_t i = 0; i < 4 * H; ++i) b.ptr<float>()[i] += b_hh.ptr<float>()[i];  // gates see their sum
    h->lstm_[d] = {{Linear(w.get("text.lstm.weight_ih" + sfx, {4 * H, E})), b},
                   w.get("text.lstm.weight_hh" + sfx, {4 * H, H})};
  }
  h->block1_.w = w.conv_bn("image.block1.0", "image.block1.1", {c1, 3, 3, 3}, c.bn_eps, &h->block1_.b);
  h->block2_.w = w.conv_bn("image.block2.0", "image.block2.1", {c2, c1, 3, 3}, c.bn_eps, &h->block2_.b);
  h->fuse_.w = w.conv_bn("fuse.0", "fuse.1", {F, c2 + 2 * H, 3, 3}, c.bn_eps, &h->fuse_.b);
  h->mlp1_ = {Linear(w.get("cbam.mlp.0.weight", {R, F})), w.get("cbam.mlp.0.bias", {R})};
  h->mlp2_ = {Linear(w.get("cbam.mlp.2.weight", {F, R})), w.get("cbam.mlp.2.bias", {F})};
  h->spatial_ = w.get("cbam.spatial.weight", {1, 2, c.spatial_kernel, c.spatial_kernel});
  h->head_ = {Linear(w.get("head.weight", {K, F})), w.get("head.bias", {K})};
  return h;
}

Tensor SentimentHead::forward(const ops::Context& ctx, const Tensor& token_features,
                              const std::vector<ops::EncoderSeq>& seqs, const Tensor& images) const {
  const SentimentClassifierConfig& c = config_;
  const auto N = static_cast<int64_t>(seqs.size());
  const int64_t T = token_features.rows(), H = c.lstm_hidden, S = c.image_size, G = c.grid();
  const int64_t c1 = c.image_channels[0], c2 = c.image_channels[1], F = c.fuse_channels;
  KS_CHECK(token_features.ndim() == 2 && token_features.cols() == c.text_dim,
           "classifier: token features {} do not have the encoder width {} the classifier was trained on",
           token_features.describe(), c.text_dim);
  KS_CHECK(images.shape == std::vector<int64_t>({N, 3, S, S}),
           "classifier: images {} must be [{}, 3, {}, {}]: one {}x{} RGB image per text", images.describe(), N, S, S, S,
           S);

  // Text: BiLSTM, both directions into one [T, 2H], then the mean over each text's tokens.
  Tensor gates = alloc(ctx, {T, 4 * H}), states = alloc(ctx, {T, 2 * H}), text = alloc(ctx, {N, 2 * H});
  for (int d = 0; d < 2; ++d) {
    ops::matmul(ctx, token_features, lstm_[d].input.w, gates, &lstm_[d].input.b);
    ops::lstm(ctx, gates, lstm_[d].w_hh, seqs, d == 1, d * H, states);
  }
  ops::mean_rows(ctx, states, seqs, text);

  // Image: two conv-BN-ReLU-maxpool blocks.
  const ops::Conv2dParams same{.stride = 1, .pad = 1, .relu = true};
  Tensor a1 = alloc(ctx, {N, c1, S, S}), p1 = alloc(ctx, {N, c1, S / 2, S / 2});
  Tensor a2 = alloc(ctx, {N, c2, S / 2, S / 2}), p2 = alloc(ctx, {N, c2, G, G});
  ops::conv2d(ctx, images, block1_.w, &block1_.b, same, a1);
  ops::max_pool2d(ctx, a1, 2, p1);
  ops::conv2d(ctx, p1, block2_.w, &block2_.b, same, a2);
  ops::max_pool2d(ctx, a2, 2, p2);

  // Fusion: the text vector at every pixel of the image map, then conv-BN-ReLU.
  Tensor joined = alloc(ctx, {N, c2 + 2 * H, G, G}), x = alloc(ctx, {N, F, G, G});
  ops::concat_tiled(ctx, p2, text, joined);
  ops::conv2d(ctx, joined, fuse_.w, &fuse_.b, same, x);

  // CBAM channel attention: sigmoid(MLP(mean) + MLP(max)) per channel, one MLP for both sets of rows.
  Tensor pooled = alloc(ctx, {2, N, F}), hidden = alloc(ctx, {2 * N, F / c.cbam_reduction});
  Tensor att = alloc(ctx, {2 * N, F});
  ops::global_pool(ctx, x, pooled);
  ops::matmul(ctx, pooled.reshaped({2 * N, F}), mlp1_.w, hidden, &mlp1_.b);
  ops::relu(ctx, hidden, hidden);
  ops::matmul(ctx, hidden, mlp2_.w, att, &mlp2_.b);
  Tensor channel = att.slice_rows(0, N);
  ops::add(ctx, channel, att.slice_rows(N, N), channel);
  ops::sigmoid(ctx, channel, channel);
  ops::mul_broadcast(ctx, x, channel.reshaped({N, F, 1, 1}), x);

  // CBAM spatial attention: sigmoid(conv([mean, max] over channels)) per pixel.
  Tensor stats = alloc(ctx, {N, 2, G, G}), spatial = alloc(ctx, {N, 1, G, G});
  ops::channel_pool(ctx, x, stats);
  ops::conv2d(ctx, stats, spatial_, nullptr, {.stride = 1, .pad = c.spatial_kernel / 2, .relu = false}, spatial);
  ops::sigmoid(ctx, spatial, spatial);
  ops::mul_broadcast(ctx, x, spatial, x);

  // Global average pool (the mean half of global_pool) and the linear classifier.
  ops::global_pool(ctx, x, pooled);
  const auto K = static_cast<int64_t>(c.classes.size());
  Tensor logits = alloc(ctx, {N, K});
  ops::matmul(ctx, pooled.reshaped({2 * N, F}).slice_rows(0, N), head_.w, logits, &head_.b);
  Tensor out = Tensor::empty_host(DType::F32, {N, K});
  ops::download(ctx, logits, out);
  return out;
}

Tensor image_input(const RgbImage& img, const SentimentClassifierConfig& c) {
  KS_CHECK(img.width == c.image_size && img.height == c.image_size,
           "the classifier takes {}x{} RGB images, got {}x{}; resize it first (e.g. `convert in.png -resize {}x{}! "
           "out.ppm`)",
           c.image_size, c.image_size, img.width, img.height, c.image_size, c.image_size);
  const int64_t S = c.image_size;
  Tensor t = Tensor::empty_host(DType::F32, {1, 3, S, S});
  for (int64_t ch = 0; ch < 3; ++ch)
    for (int64_t p = 0; p < S * S; ++p)
      t.ptr<float>()[ch * S * S + p] = static_cast<float>(img.rgb[p * 3 + ch]) * c.image_scale;
  return t;
}

Tensor SentimentClassifier::logits(const ops::Context& ctx, std::span<const std::string_view> texts,
                                   std::span<const RgbImage> images) const {
  KS_CHECK(!texts.empty() && texts.size() == images.size(), "classify takes pairs: {} texts and {} images",
           texts.size(), images.size());
  const SentimentClassifierConfig& c = head->config();
  EncoderInputOptions options;
  options.pad = false;  // stacked rows, as the training's unpadded token features
  options.max_length = static_cast<size_t>(c.max_tokens);
  const std::vector<EncoderInput> inputs = encode_batch(*encoder->tokenizer, texts, options);
  std::vector<ops::EncoderSeq> seqs;
  int32_t row = 0;
  for (const EncoderInput& in : inputs) {
    seqs.push_back({row, static_cast<int32_t>(in.ids.size())});
    row += static_cast<int32_t>(in.ids.size());
  }
  std::vector<Tensor> inputs_f32;  // each checked for size before the batch is allocated
  for (const RgbImage& img : images) inputs_f32.push_back(image_input(img, c));
  const int64_t S = c.image_size, plane = 3 * S * S;
  Tensor batch = Tensor::empty_host(DType::F32, {static_cast<int64_t>(images.size()), 3, S, S});
  for (size_t i = 0; i < images.size(); ++i)
    std::copy_n(inputs_f32[i].ptr<float>(), plane, batch.ptr<float>() + static_cast<int64_t>(i) * plane);
  const Tensor features = ops::upload(ctx, encoder->encoder->forward(ctx, inputs));
  return head->forward(ctx, features, seqs, ops::upload(ctx, batch));
}

std::unique_ptr<SentimentClassifier> load_sentiment_classifier(const std::string& dir, const std::string& encoder_dir) {
  auto m = std::make_unique<SentimentClassifier>();
  m->head = SentimentHead::load(dir);
  std::string enc = encoder_dir;
  if (enc.empty() && fs::is_directory(fs::path(dir) / "encoder")) enc = (fs::path(dir) / "encoder").string();
  if (enc.empty()) enc = cache_dir() + "/models/" + m->head->config().encoder;
  KS_CHECK(fs::is_directory(enc),
           "the classifier's encoder '{}' is not at {}; pass --encoder DIR or run scripts/fetch_test_vocabs.sh",
           m->head->config().encoder, enc);
  m->encoder = load_embedding_model(enc);
  KS_CHECK(m->encoder->encoder->config().hidden == m->head->config().text_dim,
           "{}: the encoder's hidden size {} is not the {} the classifier was trained on", enc,
           m->encoder->encoder->config().hidden, m->head->config().text_dim);
  return m;
}

std::vector<std::vector<double>> softmax_rows(const Tensor& logits) {
  std::vector<std::vector<double>> out;
  for (int64_t r = 0; r < logits.rows(); ++r) {
    const float* l = logits.ptr<float>() + r * logits.cols();
    double mx = -std::numeric_limits<double>::infinity(), sum = 0;
    for (int64_t k = 0; k < logits.cols(); ++k) mx = std::max(mx, static_cast<double>(l[k]));
    std::vector<double> p(logits.cols());
    for (int64_t k = 0; k < logits.cols(); ++k) sum += (p[k] = std::exp(l[k] - mx));
    for (double& v : p) v /= sum;
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace kestrel
