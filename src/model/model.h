// A loaded model: the decoder, its tokenizer, its chat template and where it came from. This is what the
// CLI, the server and library users hold.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "model/decoder.h"
#include "tokenizer/tokenizer.h"

namespace kestrel {

class GgufFile;

struct Model {
  std::string path;
  std::string format;        // "gguf" or "safetensors"
  std::string quantization;  // a GPTQ/AWQ checkpoint's quantization (HfQuantization::describe); empty: none
  std::unique_ptr<Decoder> decoder;
  std::unique_ptr<Tokenizer> tokenizer;
  std::string chat_template;             // empty when the model ships none
  std::shared_ptr<const GgufFile> gguf;  // set for GGUF models (for `kestrel info`)
  nlohmann::json generation_config;      // a Hugging Face directory's generation_config.json (null: none)

  const ModelConfig& config() const { return decoder->config(); }
};

// Loads a GGUF file or a Hugging Face directory (config.json, safetensors, tokenizer.json). Throws
// kestrel::Error with a message that names the path and the problem.
std::unique_ptr<Model> load_model(const std::string& path);

// The default model's path: $KESTREL_MODEL, else ~/.cache/kestrel/SmolLM2-135M-Instruct.Q4_1.gguf
// (scripts/setup.sh puts it there).
std::string default_model_path();

}  // namespace kestrel
