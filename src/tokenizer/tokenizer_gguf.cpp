// spec_from_gguf: the tokenizer.ggml.* keys of a GGUF file -> GgufTokenizerFields -> TokenizerSpec.
#include "core/error.h"
#include "formats/gguf.h"
#include "tokenizer/tokenizer_spec.h"

namespace kestrel {
namespace {

std::optional<int64_t> find_id(const GgufFile& file, std::string_view key) {
  const GgufValue* v = file.find(key);
  if (v == nullptr) return std::nullopt;
  const std::optional<int64_t> id = v->as_i64();
  KS_CHECK(id.has_value(), "tokenizer: {}: {} must be an integer, not {}", file.path(), key, gguf_type_name(v->type()));
  return id;
}

}  // namespace

TokenizerSpec spec_from_gguf(const GgufFile& file) {
  GgufTokenizerFields f;
  KS_CHECK(file.has("tokenizer.ggml.model"), "tokenizer: {} has no tokenizer (tokenizer.ggml.model is missing)",
           file.path());
  f.model = file.get_string("tokenizer.ggml.model");
  f.tokens = file.get_string_array("tokenizer.ggml.tokens");
  if (auto scores = file.find_f32_array("tokenizer.ggml.scores")) f.scores = std::move(*scores);
  if (auto types = file.find_i32_array("tokenizer.ggml.token_type")) f.token_types = std::move(*types);
  if (auto merges = file.find_string_array("tokenizer.ggml.merges")) f.merges = std::move(*merges);
  if (const std::string* pre = file.find_string("tokenizer.ggml.pre")) f.pre = *pre;
  f.bos_id = find_id(file, "tokenizer.ggml.bos_token_id");
  f.eos_id = find_id(file, "tokenizer.ggml.eos_token_id");
  f.unk_id = find_id(file, "tokenizer.ggml.unknown_token_id");
  f.pad_id = find_id(file, "tokenizer.ggml.padding_token_id");
  f.eot_id = find_id(file, "tokenizer.ggml.eot_token_id");
  f.eom_id = find_id(file, "tokenizer.ggml.eom_token_id");
  f.add_bos = file.find_bool("tokenizer.ggml.add_bos_token");
  f.add_eos = file.find_bool("tokenizer.ggml.add_eos_token");
  f.add_space_prefix = file.find_bool("tokenizer.ggml.add_space_prefix");
  try {
    return spec_from_gguf_fields(f);
  } catch (const Error& e) {
    KS_FAIL("{}: {}", file.path(), e.what());
  }
}

}  // namespace kestrel
