#include "model/encoder.h"

#include <fmt/ranges.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include "core/convert.h"
#include "core/error.h"
#include "formats/hf_config.h"
#include "formats/safetensors.h"
#include "model/stack_rows.h"
#include "ops/ops.h"
#include "tokenizer/tokenizer_file.h"

namespace kestrel {
namespace fs = std::filesystem;

namespace {

int positive_int(const nlohmann::json& j, const char* name, const std::string& where) {
  const nlohmann::json* v = json_field(j, name);
  KS_CHECK(v, "{}: config.json has no '{}'", where, name);
  return static_cast<int>(json_int(*v, name, where, 1, std::numeric_limits<int>::max()));
}

EncoderConfig read_config(const std::string& dir) {
  const fs::path path = fs::path(dir) / "config.json";
  KS_CHECK(fs::exists(path), "{}: no config.json; an encoder directory holds config.json and model.safetensors", dir);
  const nlohmann::json j = load_json_file(path.string());
  const std::string where = path.string();
  const std::string type = json_field_or<std::string>(j, "model_type", "", where);
  KS_CHECK(type == "bert",
           "{}: model_type '{}' is not a BERT encoder; embeddings need a BertModel checkpoint such as "
           "all-MiniLM-L6-v2",
           where, type);
  const std::string act = json_field_or<std::string>(j, "hidden_act", "gelu", where);
  KS_CHECK(act == "gelu", "{}: hidden_act '{}' is not supported (only BERT's exact 'gelu')", where, act);
  const std::string pos = json_field_or<std::string>(j, "position_embedding_type", "absolute", where);
  KS_CHECK(pos == "absolute", "{}: position_embedding_type '{}' is not supported (only 'absolute')", where, pos);
  EncoderConfig c;
  c.hidden = positive_int(j, "hidden_size", where);
  c.n_layers = positive_int(j, "num_hidden_layers", where);
  c.n_heads = positive_int(j, "num_attention_heads", where);
  c.intermediate = positive_int(j, "intermediate_size", where);
  c.vocab = positive_int(j, "vocab_size", where);
  c.max_positions = positive_int(j, "max_position_embeddings", where);
  c.type_vocab = positive_int(j, "type_vocab_size", where);
  if (const nlohmann::json* eps = json_field(j, "layer_norm_eps"))
    c.norm_eps = json_float(*eps, "layer_norm_eps", where);
  KS_CHECK(c.hidden % c.n_heads == 0, "{}: hidden_size {} is not a multiple of num_attention_heads {}", where, c.hidden,
           c.n_heads);
  return c;
}

// The checkpoint's tensors under BertModel's names; task heads (BertForX) put them under "bert.".
class BertTensors {
 public:
  explicit BertTensors(const std::string& dir) : st_(SafetensorsModel::open_dir(dir)) {
    if (!st_->has("embeddings.word_embeddings.weight") && st_->has("bert.embeddings.word_embeddings.weight"))
      prefix_ = "bert.";
  }

  Tensor get(const std::string& name, std::vector<int64_t> shape) const {
    const std::string full = prefix_ + name;
    KS_CHECK(st_->has(full), "{}: no tensor '{}'; not a BERT encoder checkpoint?", st_->path(), full);
    Tensor t = st_->tensor(full);
    KS_CHECK(t.shape == shape, "{}: tensor '{}' is {}, expected shape [{}] from config.json", st_->path(), full,
             t.describe(), fmt::join(shape, ", "));
    return t;
  }

  // Norm weights and biases: f32 whatever the file stores (the ops take f32 parameters).
  Tensor f32(const std::string& name, int64_t n) const {
    Tensor t = get(name, {n});
    if (t.dtype == DType::F32) return t;
    Tensor out = Tensor::empty_host(DType::F32, {n});
    convert_rows(t.dtype, t.data, DType::F32, out.data, 1, n);
    return out;
  }

 private:
  std::shared_ptr<SafetensorsModel> st_;
  std::string prefix_;
};

Pooling read_pooling(const std::string& dir) {
  Pooling p;
  const fs::path modules = fs::path(dir) / "modules.json";
  if (!fs::exists(modules)) return p;
  const nlohmann::json j = load_json_file(modules.string());
  KS_CHECK(j.is_array(), "{}: expected a list of modules", modules.string());
  for (const nlohmann::json& m : j) {
    const std::string type = json_field_or<std::string>(m, "type", "", modules.string());
    if (type.ends_with(".Transformer")) continue;
    if (type.ends_with(".Normalize")) {
      p.normalize = true;
      continue;
    }
    KS_CHECK(type.ends_with(".Pooling"), "{}: module '{}' is not supported (Transformer, Pooling, Normalize only)",
             modules.string(), type);
    const fs::path cfg_path =
        fs::path(dir) / json_field_or<std::string>(m, "path", "", modules.string()) / "config.json";
    const nlohmann::json cfg = load_json_file(cfg_path.string());
    const bool cls = json_field_or<bool>(cfg, "pooling_mode_cls_token", false, cfg_path.string());
    const bool mean = json_field_or<bool>(cfg, "pooling_mode_mean_tokens", false, cfg_path.string());
    for (const char* other : {"pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
                              "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"})
      KS_CHECK(!json_field_or<bool>(cfg, other, false, cfg_path.string()), "{}: {} is not supported (mean or CLS only)",
               cfg_path.string(), other);
    KS_CHECK(cls != mean, "{}: exactly one of pooling_mode_cls_token and pooling_mode_mean_tokens must be set",
             cfg_path.string());
    p.mode = cls ? Pooling::Mode::Cls : Pooling::Mode::Mean;
  }
  return p;
}

Tensor host_i32(const std::vector<int32_t>& v) {
  Tensor t = Tensor::empty_host(DType::I32, {static_cast<int64_t>(v.size())});
  std::memcpy(t.data, v.data(), v.size() * sizeof(int32_t));
  return t;
}

}  // namespace

std::unique_ptr<Encoder> Encoder::load(const std::string& dir) {
  KS_CHECK(fs::is_directory(dir),
           "{}: not a directory; an encoder is a directory with config.json and "
           "model.safetensors",
           dir);
  auto e = std::unique_ptr<Encoder>(new Encoder());
  e->config_ = read_config(dir);
  const EncoderConfig& c = e->config_;
  const BertTensors st(dir);
  e->word_emb_ = st.get("embeddings.word_embeddings.weight", {c.vocab, c.hidden});
  e->pos_emb_ = st.get("embeddings.position_embeddings.weight", {c.max_positions, c.hidden});
  e->type_emb_ = st.get("embeddings.token_type_embeddings.weight", {c.type_vocab, c.hidden});
  auto norm = [&](const std::string& name) {
    return Norm{st.f32(name + ".weight", c.hidden), st.f32(name + ".bias", c.hidden)};
  };
  auto dense = [&](const std::string& name, int64_t out, int64_t in) {
    return Dense{Linear(st.get(name + ".weight", {out, in})), st.f32(name + ".bias", out)};
  };
  e->emb_norm_ = norm("embeddings.LayerNorm");
  for (int i = 0; i < c.n_layers; ++i) {
    const std::string p = "encoder.layer." + std::to_string(i) + ".";
    Layer l;
    std::vector<Tensor> w, b;
    for (const char* part : {"query", "key", "value"}) {
      const std::string name = p + "attention.self." + part;
      w.push_back(st.get(name + ".weight", {c.hidden, c.hidden}));
      b.push_back(st.f32(name + ".bias", c.hidden));
    }
    Tensor qkv_w = stack_rows({&w[0], &w[1], &w[2]}), qkv_b = stack_rows({&b[0], &b[1], &b[2]});
    KS_CHECK(!qkv_w.empty(), "{}: the query, key and value weights differ in dtype ({}, {}, {})", p, w[0].describe(),
             w[1].describe(), w[2].describe());
    l.qkv = Dense{Linear(std::move(qkv_w)), std::move(qkv_b)};
    l.attn_out = dense(p + "attention.output.dense", c.hidden, c.hidden);
    l.attn_norm = norm(p + "attention.output.LayerNorm");
    l.up = dense(p + "intermediate.dense", c.intermediate, c.hidden);
    l.down = dense(p + "output.dense", c.hidden, c.intermediate);
    l.out_norm = norm(p + "output.LayerNorm");
    e->layers_.push_back(std::move(l));
  }
  return e;
}

void Encoder::place_on(const ops::Context& ctx) {
  if (ctx.device == device_) return;
  KS_CHECK(device_ == Device::Cpu && ctx.device == Device::Cuda, "encoder weights can only move from the CPU to CUDA");
  auto as_bf16 = [&](Tensor& t) {
    Tensor h = Tensor::empty_host(DType::BF16, t.shape);
    convert_rows(t.dtype, t.data, DType::BF16, h.data, t.rows(), t.cols());
    t = ops::upload(ctx, h);
  };
  auto as_is = [&](Tensor& t) { t = ops::upload(ctx, t); };
  for (Tensor* t : {&word_emb_, &pos_emb_, &type_emb_}) as_bf16(*t);
  as_is(emb_norm_.w), as_is(emb_norm_.b);
  for (Layer& l : layers_) {
    for (Dense* d : {&l.qkv, &l.attn_out, &l.up, &l.down}) as_bf16(d->w.weight), as_is(d->b);
    for (Norm* n : {&l.attn_norm, &l.out_norm}) as_is(n->w), as_is(n->b);
  }
  device_ = ctx.device;
  act_dtype_ = DType::BF16;
}

Tensor Encoder::forward(const ops::Context& ctx, std::span<const EncoderInput> inputs) const {
  const EncoderConfig& c = config_;
  std::vector<int32_t> ids, types, positions, mask;
  ops::EncoderAttentionBatch batch;
  batch.scale = 1.f / std::sqrt(static_cast<float>(c.head_dim()));
  bool padded = false;
  for (const EncoderInput& in : inputs) {
    const auto len = static_cast<int32_t>(in.ids.size());
    KS_CHECK(in.type_ids.size() == in.ids.size() && in.attention_mask.size() == in.ids.size(),
             "encoder input rows need as many type ids and mask entries as ids");
    KS_CHECK(len <= c.max_positions, "an input of {} tokens is longer than the encoder's {} positions", len,
             c.max_positions);
    batch.seqs.push_back({static_cast<int32_t>(ids.size()), len});
    for (int32_t i = 0; i < len; ++i) {
      KS_CHECK(in.ids[i] >= 0 && in.ids[i] < c.vocab, "token id {} outside the encoder's vocabulary of {}", in.ids[i],
               c.vocab);
      KS_CHECK(in.type_ids[i] >= 0 && in.type_ids[i] < c.type_vocab,
               "token type id {} outside the encoder's {} token types", in.type_ids[i], c.type_vocab);
      ids.push_back(in.ids[i]);
      types.push_back(in.type_ids[i]);
      positions.push_back(i);  // BERT counts positions over the padded row, as transformers does
      mask.push_back(in.attention_mask[i] != 0);
      padded |= in.attention_mask[i] == 0;
    }
  }
  KS_CHECK(ctx.device == device_, "the encoder's weights are not on the requested device; call place_on first");
  const auto T = static_cast<int64_t>(ids.size());
  const int64_t H = c.hidden;
  if (padded) batch.key_mask = ops::upload(ctx, host_i32(mask));

  const DType act = act_dtype_;
  Tensor x = ops::allocate(ctx, act, {T, H}), tmp = ops::allocate(ctx, act, {T, H});
  ops::embed(ctx, word_emb_, ops::upload(ctx, host_i32(ids)), x);
  ops::embed(ctx, pos_emb_, ops::upload(ctx, host_i32(positions)), tmp);
  ops::add(ctx, x, tmp, x);
  ops::embed(ctx, type_emb_, ops::upload(ctx, host_i32(types)), tmp);
  ops::add(ctx, x, tmp, x);
  ops::layernorm(ctx, x, emb_norm_.w, emb_norm_.b, c.norm_eps, x);

  Tensor qkv = ops::allocate(ctx, act, {T, 3 * H});
  Tensor heads = ops::allocate(ctx, act, {T, c.n_heads, c.head_dim()});
  Tensor up = ops::allocate(ctx, act, {T, c.intermediate});
  const Tensor attn = heads.reshaped({T, H});
  for (const Layer& l : layers_) {
    // Post-LN blocks: x = LN(x + Attention(x)); x = LN(x + MLP(x)).
    ops::matmul(ctx, x, l.qkv.w, qkv, &l.qkv.b);
    ops::encoder_attention(ctx, qkv, batch, heads);
    ops::matmul(ctx, attn, l.attn_out.w, tmp, &l.attn_out.b);
    ops::add(ctx, tmp, x, tmp);
    ops::layernorm(ctx, tmp, l.attn_norm.w, l.attn_norm.b, c.norm_eps, x);
    ops::matmul(ctx, x, l.up.w, up, &l.up.b);
    ops::gelu(ctx, up, up);
    ops::matmul(ctx, up, l.down.w, tmp, &l.down.b);
    ops::add(ctx, tmp, x, tmp);
    ops::layernorm(ctx, tmp, l.out_norm.w, l.out_norm.b, c.norm_eps, x);
  }
  Tensor out = Tensor::empty_host(act, {T, H});
  ops::download(ctx, x, out);
  if (act == DType::F32) return out;
  Tensor f = Tensor::empty_host(DType::F32, {T, H});
  convert_rows(act, out.data, DType::F32, f.data, T, H);
  return f;
}

std::vector<std::vector<float>> pool(const Tensor& hidden, std::span<const EncoderInput> inputs, const Pooling& p) {
  const int64_t H = hidden.cols();
  std::vector<std::vector<float>> out;
  int64_t row = 0;
  for (const EncoderInput& in : inputs) {
    std::vector<double> acc(H, 0.0);
    double count = 0;
    for (size_t i = 0; i < in.ids.size(); ++i) {
      const bool take = p.mode == Pooling::Mode::Cls ? i == 0 : in.attention_mask[i] != 0;
      if (!take) continue;
      const float* h = hidden.ptr<float>() + (row + static_cast<int64_t>(i)) * H;
      for (int64_t d = 0; d < H; ++d) acc[d] += h[d];
      count += 1;
    }
    row += static_cast<int64_t>(in.ids.size());
    std::vector<float> v(H);
    // sentence-transformers divides by max(count, 1e-9): a row with no token pools to zeros.
    for (int64_t d = 0; d < H; ++d) v[d] = static_cast<float>(acc[d] / std::max(count, 1e-9));
    if (p.normalize) {
      double ss = 0;
      for (float f : v) ss += static_cast<double>(f) * f;
      const double norm = std::max(std::sqrt(ss), 1e-12);  // torch.nn.functional.normalize's eps
      for (float& f : v) f = static_cast<float>(f / norm);
    }
    out.push_back(std::move(v));
  }
  return out;
}

std::vector<std::vector<float>> EmbeddingModel::embed(const ops::Context& ctx,
                                                      std::span<const std::string_view> texts) const {
  return embed(ctx, encode(texts));
}

std::vector<EncoderInput> EmbeddingModel::encode(std::span<const std::string_view> texts) const {
  if (texts.empty()) return {};
  EncoderInputOptions options;
  options.pad = false;  // sequences are stacked, not padded to a common length
  options.max_length = max_tokens;
  return encode_batch(*tokenizer, texts, options);
}

std::vector<std::vector<float>> EmbeddingModel::embed(const ops::Context& ctx,
                                                      std::span<const EncoderInput> inputs) const {
  if (inputs.empty()) return {};
  return pool(encoder->forward(ctx, inputs), inputs, pooling);
}

size_t EmbeddingModel::max_input_tokens() const {
  return max_tokens > 0 ? max_tokens : static_cast<size_t>(encoder->config().max_positions);
}

bool is_encoder_dir(const std::string& dir) {
  const fs::path config = fs::path(dir) / "config.json";
  std::error_code ec;
  if (!fs::is_directory(dir, ec) || !fs::exists(config, ec)) return false;
  try {
    return json_field_or<std::string>(load_json_file(config.string()), "model_type", "", config.string()) == "bert";
  } catch (const Error&) {
    return false;  // an unreadable config: let the generation loader report it
  }
}

std::unique_ptr<EmbeddingModel> load_embedding_model(const std::string& dir) {
  auto m = std::make_unique<EmbeddingModel>();
  m->encoder = Encoder::load(dir);
  KS_CHECK(fs::exists(fs::path(dir) / "tokenizer.json"), "{}: no tokenizer.json beside the encoder", dir);
  m->tokenizer = load_tokenizer(dir);
  m->pooling = read_pooling(dir);
  const fs::path st_config = fs::path(dir) / "sentence_bert_config.json";
  if (fs::exists(st_config)) {
    const nlohmann::json j = load_json_file(st_config.string());
    if (const nlohmann::json* v = json_field(j, "max_seq_length"))
      m->max_tokens = static_cast<size_t>(
          json_int(*v, "max_seq_length", st_config.string(), 1, m->encoder->config().max_positions));
  }
  return m;
}

}  // namespace kestrel
