// BERT-family encoders (BertModel checkpoints: BERT, MiniLM, sentence-transformers models) and the
// sentence embedding built on them. Apart from the decoder: no KV cache, no causal mask, post-LN blocks.
//
// A batch runs as one forward: the rows of every sequence stacked into one [T, hidden] activation, each
// sequence attending only to its own rows (ops::encoder_attention), so a text's embedding does not depend
// on what it is batched with.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/linear.h"
#include "core/tensor.h"
#include "ops/context.h"
#include "tokenizer/encoder_inputs.h"
#include "tokenizer/tokenizer.h"

namespace kestrel {

// config.json of a BertModel checkpoint.
struct EncoderConfig {
  int hidden = 0;
  int n_layers = 0;
  int n_heads = 0;
  int intermediate = 0;
  int vocab = 0;
  int max_positions = 0;
  int type_vocab = 0;
  float norm_eps = 1e-12f;
  int head_dim() const { return hidden / n_heads; }
};

// How token states become one vector per text: sentence-transformers' 1_Pooling/config.json and whether
// modules.json ends in a Normalize module. Without those files: mean pooling, not normalized.
struct Pooling {
  enum class Mode { Mean, Cls };
  Mode mode = Mode::Mean;
  bool normalize = false;
};

// The encoder's weights and its forward pass.
class Encoder {
 public:
  // Reads `dir`/config.json and `dir`/model.safetensors (or sharded safetensors). Throws kestrel::Error
  // for a config that is not a BERT encoder, a missing file or tensor, or a tensor of the wrong shape.
  static std::unique_ptr<Encoder> load(const std::string& dir);

  const EncoderConfig& config() const { return config_; }

  // Moves the weights to ctx's device (CPU -> CUDA; a no-op on the device they are on): matrices and
  // embedding tables as bf16, norms and biases f32; the forward then keeps activations in bf16 (f32 on the
  // CPU), every op computing in f32.
  void place_on(const ops::Context& ctx);

  // Final hidden states of every input row, stacked: f32 [sum of row lengths, hidden] on the host. ctx's
  // device must be the weights' (place_on). Rows
  // may be padded; their attention masks keep padding out of every other token's attention.
  Tensor forward(const ops::Context& ctx, std::span<const EncoderInput> inputs) const;

 private:
  struct Norm {
    Tensor w, b;
  };
  struct Dense {
    Linear w;
    Tensor b;
  };
  struct Layer {
    Dense qkv;  // query, key and value fused into one [3 hidden, hidden] projection
    Dense attn_out;
    Norm attn_norm;
    Dense up;
    Dense down;
    Norm out_norm;
  };
  EncoderConfig config_;
  Device device_ = Device::Cpu;
  DType act_dtype_ = DType::F32;
  Tensor word_emb_, pos_emb_, type_emb_;
  Norm emb_norm_;
  std::vector<Layer> layers_;
};

// An encoder with its tokenizer and pooling: text in, one vector per text out.
struct EmbeddingModel {
  std::unique_ptr<Encoder> encoder;
  std::unique_ptr<Tokenizer> tokenizer;
  Pooling pooling;
  size_t max_tokens = 0;  // sentence_bert_config.json's max_seq_length; 0: tokenizer.json's truncation

  // One embedding of config().hidden floats per text, in order; the texts run as one batch.
  std::vector<std::vector<float>> embed(const ops::Context& ctx, std::span<const std::string_view> texts) const;
  // The two halves of embed(), for callers that count tokens or batch inputs from several sources (the
  // server): the texts as encoder rows, truncated as embed() truncates them, and the rows' embeddings.
  std::vector<EncoderInput> encode(std::span<const std::string_view> texts) const;
  std::vector<std::vector<float>> embed(const ops::Context& ctx, std::span<const EncoderInput> inputs) const;
  // The longest row the encoder takes: max_tokens, else the encoder's positions.
  size_t max_input_tokens() const;
};

// Whether `dir` is a directory holding an encoder checkpoint (config.json with model_type "bert"), as
// opposed to a generation model; `kestrel serve` picks what to serve by it.
bool is_encoder_dir(const std::string& dir);

// Loads an encoder directory: config.json, safetensors, tokenizer.json, and the sentence-transformers
// files when present (1_Pooling/config.json, modules.json, sentence_bert_config.json).
std::unique_ptr<EmbeddingModel> load_embedding_model(const std::string& dir);

// Pools the encoder's output rows of each input (rows stacked as Encoder::forward returns them).
std::vector<std::vector<float>> pool(const Tensor& hidden, std::span<const EncoderInput> inputs, const Pooling& p);

}  // namespace kestrel
