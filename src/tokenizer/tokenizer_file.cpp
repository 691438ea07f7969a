#include "tokenizer/tokenizer_file.h"

#include <filesystem>

#include "core/error.h"
#include "formats/gguf.h"
#include "formats/hf_config.h"

namespace kestrel {

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  KS_CHECK(fs::exists(path, ec), "'{}' does not exist", path);
  if (fs::is_directory(path, ec)) {
    const fs::path dir(path);
    KS_CHECK(fs::exists(dir / "tokenizer.json"), "{}: no tokenizer.json", path);
    const nlohmann::json tok = load_json_file((dir / "tokenizer.json").string());
    nlohmann::json config;
    if (fs::exists(dir / "tokenizer_config.json")) config = load_json_file((dir / "tokenizer_config.json").string());
    return std::make_unique<Tokenizer>(spec_from_tokenizer_json(tok, config.is_null() ? nullptr : &config));
  }
  if (fs::path(path).extension() == ".json")
    return std::make_unique<Tokenizer>(spec_from_tokenizer_json(load_json_file(path)));
  return std::make_unique<Tokenizer>(spec_from_gguf(*GgufFile::open(path)));
}

}  // namespace kestrel
