// A model's tokenizer without its weights, for tools that only tokenize (kestrel tokenize) and for
// encoder models, whose weights load elsewhere.
#pragma once

#include <memory>
#include <string>

#include "tokenizer/tokenizer.h"

namespace kestrel {

// `path` is a GGUF file (its tokenizer.ggml.* keys), a Hugging Face model directory (tokenizer.json and,
// when present, tokenizer_config.json) or a tokenizer.json file on its own. Throws kestrel::Error naming
// the path and the problem.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

}  // namespace kestrel
