#include "model/model.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "formats/gguf.h"
#include "formats/hf_config.h"
#include "formats/safetensors.h"
#include "model/cache_dir.h"
#include "model/gguf_model.h"
#include "model/hf_model.h"
#include "tokenizer/tokenizer_file.h"

namespace kestrel {
namespace fs = std::filesystem;
namespace {

std::unique_ptr<Model> load_gguf(const std::string& path) {
  auto m = std::make_unique<Model>();
  m->path = path;
  m->format = "gguf";
  auto f = GgufFile::open(path);
  m->gguf = f;
  const Architecture& arch = architecture_for_gguf(f->get_string("general.architecture"));
  ModelConfig cfg = config_from_gguf(*f, arch);
  m->tokenizer = std::make_unique<Tokenizer>(spec_from_gguf(*f));
  m->chat_template = f->get_string("tokenizer.chat_template", "");
  GgufWeights w(f);
  m->decoder = std::make_unique<Decoder>(arch, cfg, DecoderWeights::load(w, arch, cfg));
  return m;
}

std::string read_text_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  KS_CHECK(in.good(), "cannot read '{}'", p.string());
  return {std::istreambuf_iterator<char>(in), {}};
}

std::unique_ptr<Model> load_hf_dir(const std::string& dir) {
  auto m = std::make_unique<Model>();
  m->path = dir;
  m->format = "safetensors";
  const fs::path d(dir);
  KS_CHECK(fs::exists(d / "config.json"), "'{}' is a directory without config.json; expected a Hugging Face model",
           dir);
  const nlohmann::json config = load_json_file((d / "config.json").string());
  KS_CHECK(config.is_object() && config.contains("model_type") && config["model_type"].is_string(),
           "{}: config.json has no model_type", dir);
  const Architecture& arch = architecture_for_hf(config["model_type"].get<std::string>());
  ModelConfig cfg = config_from_hf(config, arch, (d / "config.json").string());

  m->tokenizer = load_tokenizer(dir);
  nlohmann::json tok_cfg;
  if (fs::exists(d / "tokenizer_config.json")) tok_cfg = load_json_file((d / "tokenizer_config.json").string());
  if (tok_cfg.is_object() && tok_cfg.contains("chat_template") && tok_cfg["chat_template"].is_string())
    m->chat_template = tok_cfg["chat_template"].get<std::string>();
  else if (fs::exists(d / "chat_template.jinja"))
    m->chat_template = read_text_file(d / "chat_template.jinja");
  if (fs::exists(d / "generation_config.json")) {
    m->generation_config = load_json_file((d / "generation_config.json").string());
    KS_CHECK(m->generation_config.is_object(), "{}: generation_config.json is not a JSON object", dir);
  }

  auto st = SafetensorsModel::open_dir(dir);
  const std::optional<HfQuantization> quant = hf_quantization(config, dir);
  if (quant) m->quantization = quant->describe();
  HfWeights w(st, arch, quant);
  // transformers would start such a model with a random lm_head; loading it tied would be another model.
  KS_CHECK(cfg.tied_embeddings || w.has("output.weight"),
           "{}: the checkpoint has no lm_head.weight and config.json does not set tie_word_embeddings to true "
           "(it is false or unset, which means false for '{}')",
           dir, arch.name);
  m->decoder = std::make_unique<Decoder>(arch, cfg, DecoderWeights::load(w, arch, cfg));
  return m;
}

}  // namespace

std::unique_ptr<Model> load_model(const std::string& path) {
  std::error_code ec;
  KS_CHECK(fs::exists(path, ec), "model '{}' does not exist", path);
  if (fs::is_directory(path, ec)) return load_hf_dir(path);
  return load_gguf(path);
}

std::string default_model_path() {
  if (const char* e = std::getenv("KESTREL_MODEL"); e && *e) return e;
  return cache_dir() + "/SmolLM2-135M-Instruct.Q4_1.gguf";
}

}  // namespace kestrel
