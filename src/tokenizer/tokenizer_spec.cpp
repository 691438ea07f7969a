#include "tokenizer/tokenizer_spec.h"

#include <algorithm>
#include <array>

#include "core/error.h"

namespace kestrel {
namespace {

// The regexes of the Hugging Face tokenizer.json files these presets stand for.
constexpr std::string_view kGpt2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

enum class Preset { gpt2, llama3, qwen2, digits_then_gpt2 };

struct PresetName {
  std::string_view name;
  Preset preset;
};

// llama.cpp's tokenizer.ggml.pre names (src/llama-vocab.cpp) grouped by the pre-tokenizer they share.
constexpr std::array kPresetNames = {
    PresetName{"default", Preset::gpt2},
    PresetName{"gpt-2", Preset::gpt2},
    PresetName{"mpt", Preset::gpt2},
    PresetName{"olmo", Preset::gpt2},
    PresetName{"phi-2", Preset::gpt2},
    PresetName{"jais", Preset::gpt2},
    PresetName{"trillion", Preset::gpt2},
    PresetName{"llama3", Preset::llama3},
    PresetName{"llama-v3", Preset::llama3},
    PresetName{"llama-bpe", Preset::llama3},
    PresetName{"falcon3", Preset::llama3},
    PresetName{"dbrx", Preset::llama3},
    PresetName{"smaug-bpe", Preset::llama3},
    PresetName{"pixtral", Preset::llama3},
    PresetName{"qwen2", Preset::qwen2},
    PresetName{"deepseek-r1-qwen", Preset::qwen2},
    PresetName{"stablelm2", Preset::qwen2},
    PresetName{"smollm", Preset::digits_then_gpt2},
    PresetName{"starcoder", Preset::digits_then_gpt2},
    PresetName{"refact", Preset::digits_then_gpt2},
    PresetName{"command-r", Preset::digits_then_gpt2},
    PresetName{"codeshell", Preset::digits_then_gpt2},
    PresetName{"exaone", Preset::digits_then_gpt2},
    PresetName{"minerva-7b", Preset::digits_then_gpt2},
};

std::optional<Preset> find_preset(const std::string& name) {
  for (const PresetName& p : kPresetNames)
    if (p.name == name) return p.preset;
  return std::nullopt;
}

int32_t optional_id(const std::optional<int64_t>& v, size_t n_tokens, const char* key) {
  if (!v) return -1;
  // Some converters write -1 or an out-of-range id for "none"; treat -1 as none and reject the rest.
  if (*v == -1) return -1;
  KS_CHECK(*v >= 0 && static_cast<uint64_t>(*v) < n_tokens,
           "tokenizer: GGUF {} = {} is outside the vocabulary ({} tokens)", key, *v, n_tokens);
  return static_cast<int32_t>(*v);
}

}  // namespace

std::vector<PreTokenizerSplit> pre_tokenizer_preset(const std::string& name) {
  const std::optional<Preset> preset = find_preset(name);
  if (!preset) {
    std::string known;
    for (const PresetName& p : kPresetNames) known += fmt::format("{}{}", known.empty() ? "" : ", ", p.name);
    KS_FAIL("tokenizer: unsupported pre-tokenizer '{}' (tokenizer.ggml.pre); supported: {}", name, known);
  }
  switch (*preset) {
    case Preset::gpt2: return {{std::string(kGpt2Regex)}};
    case Preset::llama3: return {{std::string(kLlama3Regex)}};
    case Preset::qwen2: return {{std::string(kQwen2Regex)}};
    case Preset::digits_then_gpt2:
      // HF: Sequence[Digits(individual_digits=true), ByteLevel(use_regex=true)].
      return {{R"(\p{N})"}, {std::string(kGpt2Regex)}};
  }
  KS_FAIL("tokenizer: unreachable pre-tokenizer preset");
}

TokenizerSpec spec_from_gguf_fields(const GgufTokenizerFields& f) {
  TokenizerSpec spec;
  const size_t n = f.tokens.size();
  KS_CHECK(n > 0, "tokenizer: GGUF tokenizer.ggml.tokens is missing or empty");
  spec.tokens = f.tokens;
  KS_CHECK(f.scores.empty() || f.scores.size() == n,
           "tokenizer: GGUF tokenizer.ggml.scores has {} entries for {} tokens", f.scores.size(), n);
  spec.scores = f.scores;
  KS_CHECK(f.token_types.empty() || f.token_types.size() == n,
           "tokenizer: GGUF tokenizer.ggml.token_type has {} entries for {} tokens", f.token_types.size(), n);
  spec.token_types.reserve(f.token_types.size());
  for (const int32_t t : f.token_types) {
    KS_CHECK(t >= 0 && t <= static_cast<int32_t>(TokenType::byte), "tokenizer: GGUF token type {} is not known", t);
    spec.token_types.push_back(static_cast<TokenType>(t));
  }

  if (f.model == "gpt2") {
    spec.model = TokenizerModel::byte_level_bpe;
    KS_CHECK(!f.merges.empty(), "tokenizer: GGUF tokenizer.ggml.merges is required for a gpt2 tokenizer");
    spec.merges.reserve(f.merges.size());
    for (const std::string& m : f.merges) {
      // Byte-level tokens never contain a plain space, so the first one after the first character
      // separates the two parts (llama.cpp splits the same way).
      const size_t sep = m.find(' ', 1);
      KS_CHECK(sep != std::string::npos, "tokenizer: GGUF merge '{}' has no space separating its parts", m);
      spec.merges.emplace_back(m.substr(0, sep), m.substr(sep + 1));
    }
    spec.pre_name = f.pre.value_or("default");
    spec.pre_splits = pre_tokenizer_preset(spec.pre_name);
    const bool llama3 = find_preset(spec.pre_name) == Preset::llama3;
    spec.ignore_merges = llama3;
    spec.add_bos = f.add_bos.value_or(llama3);
  } else if (f.model == "llama") {
    spec.model = TokenizerModel::sentencepiece_bpe;
    KS_CHECK(!f.scores.empty(), "tokenizer: GGUF tokenizer.ggml.scores is required for a llama tokenizer");
    spec.pre_name = f.pre.value_or("default");
    spec.escape_whitespace = true;
    spec.byte_fallback = true;
    const bool space_prefix = f.add_space_prefix.value_or(true);
    spec.space_prefix = space_prefix ? SpacePrefix::every_segment : SpacePrefix::none;
    spec.decode_space_prefix = space_prefix ? DecodeSpacePrefix::strip_leading_space : DecodeSpacePrefix::keep;
    spec.add_bos = f.add_bos.value_or(true);
  } else {
    KS_FAIL("tokenizer: unsupported GGUF tokenizer.ggml.model '{}' (supported: gpt2, llama)", f.model);
  }
  spec.add_eos = f.add_eos.value_or(false);
  spec.bos_id = optional_id(f.bos_id, n, "tokenizer.ggml.bos_token_id");
  spec.eos_id = optional_id(f.eos_id, n, "tokenizer.ggml.eos_token_id");
  spec.unk_id = optional_id(f.unk_id, n, "tokenizer.ggml.unknown_token_id");
  spec.pad_id = optional_id(f.pad_id, n, "tokenizer.ggml.padding_token_id");
  spec.eot_id = optional_id(f.eot_id, n, "tokenizer.ggml.eot_token_id");
  spec.eom_id = optional_id(f.eom_id, n, "tokenizer.ggml.eom_token_id");

  for (size_t id = 0; id < spec.token_types.size(); ++id) {
    const TokenType t = spec.token_types[id];
    if (t != TokenType::control && t != TokenType::user_defined && t != TokenType::unknown) continue;
    if (spec.tokens[id].empty()) continue;
    AddedToken a;
    a.id = static_cast<int32_t>(id);
    a.content = spec.tokens[id];
    a.special = t != TokenType::user_defined;
    spec.added_tokens.push_back(std::move(a));
  }
  validate_spec(spec);
  return spec;
}

void validate_spec(const TokenizerSpec& spec) {
  const size_t n = spec.tokens.size();
  KS_CHECK(n > 0, "tokenizer: the vocabulary is empty");
  KS_CHECK(n < (size_t{1} << 31), "tokenizer: the vocabulary has too many tokens ({})", n);
  KS_CHECK(spec.scores.empty() || spec.scores.size() == n, "tokenizer: {} scores for {} tokens", spec.scores.size(), n);
  KS_CHECK(spec.token_types.empty() || spec.token_types.size() == n, "tokenizer: {} token types for {} tokens",
           spec.token_types.size(), n);
  for (const AddedToken& t : spec.added_tokens) {
    KS_CHECK(t.id >= 0 && static_cast<size_t>(t.id) < n, "tokenizer: added token '{}' has id {} outside the vocabulary",
             t.content, t.id);
    KS_CHECK(!t.content.empty(), "tokenizer: added token {} has empty text", t.id);
  }
  auto check_id = [&](int32_t id, const char* what) {
    KS_CHECK(id >= -1 && id < static_cast<int64_t>(n), "tokenizer: {} id {} is outside the vocabulary", what, id);
  };
  check_id(spec.bos_id, "bos");
  check_id(spec.eos_id, "eos");
  check_id(spec.unk_id, "unk");
  check_id(spec.pad_id, "pad");
  check_id(spec.eot_id, "eot");
  check_id(spec.eom_id, "eom");
  for (const int32_t id : spec.extra_eog_ids) check_id(id, "end-of-generation");
  KS_CHECK(!spec.add_bos || spec.bos_id >= 0, "tokenizer: add_bos is set but there is no bos token");
  KS_CHECK(!spec.add_eos || spec.eos_id >= 0, "tokenizer: add_eos is set but there is no eos token");
  KS_CHECK(spec.model != TokenizerModel::sentencepiece_bpe || !spec.merges.empty() || !spec.scores.empty(),
           "tokenizer: a sentencepiece tokenizer needs merges or scores");
  if (spec.model == TokenizerModel::wordpiece) {
    KS_CHECK(spec.unk_id >= 0, "tokenizer: a WordPiece tokenizer needs an unk token");
    KS_CHECK(spec.wordpiece.max_input_chars_per_word > 0, "tokenizer: WordPiece max_input_chars_per_word must be > 0");
  }
  if (spec.post_template) {
    for (const auto* pieces : {&spec.post_template->single, &spec.post_template->pair}) {
      for (const TemplatePiece& p : *pieces) {
        KS_CHECK(p.sequence >= -1 && p.sequence <= 1, "tokenizer: template sequence {} is not A or B", p.sequence);
        KS_CHECK(p.type_id >= 0, "tokenizer: template type id {} is negative", p.type_id);
        for (const int32_t id : p.ids) check_id(id, "template special token");
      }
    }
  }
  if (spec.padding) {
    check_id(spec.padding->pad_id, "padding");
    KS_CHECK(spec.padding->pad_type_id >= 0, "tokenizer: padding type id {} is negative", spec.padding->pad_type_id);
  }
}

}  // namespace kestrel
