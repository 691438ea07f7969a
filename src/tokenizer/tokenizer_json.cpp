// spec_from_tokenizer_json: Hugging Face tokenizer.json (+ tokenizer_config.json) -> TokenizerSpec.
#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/tokenizer_spec.h"

namespace kestrel {
namespace {

using json = nlohmann::json;

constexpr std::string_view kSpmSpace = "\xE2\x96\x81";
// Ids index a vector, so bound them before allocating: no real vocabulary comes near this.
constexpr int64_t kMaxTokenId = int64_t{1} << 24;
// HF ByteLevel's built-in regex (use_regex = true).
constexpr std::string_view kByteLevelRegex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

const json& member(const json& obj, const char* key, const char* where) {
  KS_CHECK(obj.is_object(), "tokenizer.json: {} must be an object", where);
  auto it = obj.find(key);
  KS_CHECK(it != obj.end(), "tokenizer.json: {} has no \"{}\"", where, key);
  return *it;
}

bool get_bool(const json& obj, const char* key, bool def) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return def;
  KS_CHECK(it->is_boolean(), "tokenizer.json: \"{}\" must be true or false", key);
  return it->get<bool>();
}

std::string get_string(const json& obj, const char* key, const char* where) {
  const json& v = member(obj, key, where);
  KS_CHECK(v.is_string(), "tokenizer.json: {}.{} must be a string", where, key);
  return v.get<std::string>();
}

std::string type_of(const json& node, const char* where) {
  return get_string(node, "type", where);
}

std::string regex_escape(std::string_view s) {
  std::string out;
  for (const char c : s) {
    if (std::string_view("\\^$.|?*+()[]{}-/").find(c) != std::string_view::npos) out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

// Either {"String": "..."} (matched literally) or {"Regex": "..."}.
std::string pattern_regex(const json& pattern, const char* where) {
  KS_CHECK(pattern.is_object(), "tokenizer.json: {} pattern must be an object", where);
  if (auto it = pattern.find("String"); it != pattern.end() && it->is_string())
    return regex_escape(it->get<std::string>());
  if (auto it = pattern.find("Regex"); it != pattern.end() && it->is_string()) return it->get<std::string>();
  KS_FAIL("tokenizer.json: {} pattern must hold \"String\" or \"Regex\"", where);
}

SplitBehavior parse_behavior(const std::string& b) {
  static const std::map<std::string, SplitBehavior, std::less<>> kBehaviors = {
      {"Isolated", SplitBehavior::isolated},
      {"Removed", SplitBehavior::removed},
      {"MergedWithPrevious", SplitBehavior::merged_with_previous},
      {"MergedWithNext", SplitBehavior::merged_with_next},
      {"Contiguous", SplitBehavior::contiguous}};
  auto it = kBehaviors.find(b);
  KS_CHECK(it != kBehaviors.end(), "tokenizer.json: unknown Split behavior '{}'", b);
  return it->second;
}

// Sequence nodes flatten into their children; null becomes nothing.
std::vector<const json*> flatten(const json& node, const char* list_key, const char* where) {
  std::vector<const json*> out;
  if (node.is_null()) return out;
  if (type_of(node, where) == "Sequence") {
    const json& items = member(node, list_key, where);
    KS_CHECK(items.is_array(), "tokenizer.json: {} Sequence.{} must be an array", where, list_key);
    for (const json& item : items) {
      auto sub = flatten(item, list_key, where);
      out.insert(out.end(), sub.begin(), sub.end());
    }
  } else {
    out.push_back(&node);
  }
  return out;
}

void parse_normalizer(const json& node, TokenizerSpec& spec) {
  for (const json* n : flatten(node, "normalizers", "normalizer")) {
    const std::string type = type_of(*n, "normalizer");
    if (type == "NFC") {
      spec.nfc = true;
    } else if (type == "Prepend") {
      KS_CHECK(get_string(*n, "prepend", "Prepend") == kSpmSpace && !spec.escape_whitespace,
               "tokenizer.json: only Prepend(\"▁\") before Replace(\" \", \"▁\") is supported");
      spec.space_prefix = SpacePrefix::every_segment;
    } else if (type == "Replace") {
      const json& pattern = member(*n, "pattern", "Replace");
      KS_CHECK(pattern.is_object() && pattern.value("String", "") == " " &&
                   get_string(*n, "content", "Replace") == kSpmSpace,
               "tokenizer.json: only the normalizer Replace(\" \", \"▁\") is supported");
      spec.escape_whitespace = true;
    } else if (type == "BertNormalizer") {
      BertNormalizerOptions o;
      o.clean_text = get_bool(*n, "clean_text", true);
      o.handle_chinese_chars = get_bool(*n, "handle_chinese_chars", true);
      o.lowercase = get_bool(*n, "lowercase", true);
      o.strip_accents = get_bool(*n, "strip_accents", o.lowercase);  // null: follow lowercase
      spec.bert_normalizer = o;
    } else {
      KS_FAIL("tokenizer.json: unsupported normalizer '{}'", type);
    }
  }
}

// Returns whether a ByteLevel step was seen.
bool parse_pre_tokenizer(const json& node, TokenizerSpec& spec) {
  bool byte_level = false;
  for (const json* p : flatten(node, "pretokenizers", "pre_tokenizer")) {
    const std::string type = type_of(*p, "pre_tokenizer");
    KS_CHECK(!byte_level, "tokenizer.json: pre-tokenizer '{}' after ByteLevel is not supported", type);
    if (type == "ByteLevel") {
      byte_level = true;
      if (get_bool(*p, "add_prefix_space", false)) {
        KS_CHECK(spec.pre_splits.empty(), "tokenizer.json: ByteLevel(add_prefix_space) after a split is not supported");
        spec.byte_level_prefix_space = true;
      }
      if (get_bool(*p, "use_regex", true)) spec.pre_splits.push_back({std::string(kByteLevelRegex)});
    } else if (type == "Split") {
      PreTokenizerSplit s;
      s.regex = pattern_regex(member(*p, "pattern", "Split"), "Split");
      s.behavior = parse_behavior(get_string(*p, "behavior", "Split"));
      s.invert = get_bool(*p, "invert", false);
      spec.pre_splits.push_back(std::move(s));
    } else if (type == "Digits") {
      spec.pre_splits.push_back({get_bool(*p, "individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)"});
    } else if (type == "Metaspace") {
      KS_CHECK(spec.pre_splits.empty(), "tokenizer.json: Metaspace after a split is not supported");
      KS_CHECK(get_string(*p, "replacement", "Metaspace") == kSpmSpace, "tokenizer.json: Metaspace must use ▁");
      std::string scheme = p->value("prepend_scheme", "");
      if (scheme.empty()) scheme = get_bool(*p, "add_prefix_space", true) ? "always" : "never";
      if (scheme == "always")
        spec.space_prefix = SpacePrefix::every_segment;
      else if (scheme == "first")
        spec.space_prefix = SpacePrefix::first;
      else if (scheme == "never")
        spec.space_prefix = SpacePrefix::none;
      else
        KS_FAIL("tokenizer.json: unknown Metaspace prepend_scheme '{}'", scheme);
      spec.space_prefix_if_missing = true;
      spec.escape_whitespace = true;
      if (get_bool(*p, "split", true))
        spec.pre_splits.push_back({std::string(kSpmSpace), SplitBehavior::merged_with_next});
    } else if (type == "BertPreTokenizer") {
      spec.bert_pre_tokenizer = true;
    } else {
      KS_FAIL("tokenizer.json: unsupported pre_tokenizer '{}'", type);
    }
  }
  return byte_level;
}

// Returns whether a ByteLevel decoder was seen.
bool parse_decoder(const json& node, TokenizerSpec& spec) {
  bool byte_level = false;
  for (const json* d : flatten(node, "decoders", "decoder")) {
    const std::string type = type_of(*d, "decoder");
    if (type == "ByteLevel") {
      byte_level = true;
    } else if (type == "ByteFallback" || type == "Fuse") {
      // Byte tokens and joining are how every decoding here works already.
    } else if (type == "Replace") {
      const json& pattern = member(*d, "pattern", "Replace");
      KS_CHECK(pattern.is_object() && pattern.value("String", "") == kSpmSpace &&
                   get_string(*d, "content", "Replace") == " ",
               "tokenizer.json: only the decoder Replace(\"▁\", \" \") is supported");
    } else if (type == "Strip") {
      const auto start = d->value("start", 0), stop = d->value("stop", 0);
      KS_CHECK(get_string(*d, "content", "Strip") == " " && start <= 1 && stop == 0,
               "tokenizer.json: only the decoder Strip(\" \", 1, 0) is supported");
      if (start == 1) spec.decode_space_prefix = DecodeSpacePrefix::strip_leading_space;
    } else if (type == "Metaspace") {
      std::string scheme = d->value("prepend_scheme", "");
      if (scheme.empty()) scheme = get_bool(*d, "add_prefix_space", true) ? "always" : "never";
      if (scheme != "never") spec.decode_space_prefix = DecodeSpacePrefix::strip_first_token_ws;
    } else if (type == "WordPiece") {
      WordPieceDecoderOptions o;
      o.prefix = d->contains("prefix") ? get_string(*d, "prefix", "WordPiece decoder") : o.prefix;
      o.cleanup = get_bool(*d, "cleanup", true);
      spec.wordpiece_decoder = o;
    } else {
      KS_FAIL("tokenizer.json: unsupported decoder '{}'", type);
    }
  }
  return byte_level;
}

using IdMap = std::map<std::string, int32_t, std::less<>>;

int32_t lookup(const IdMap& ids, const std::string& text, const char* what) {
  auto it = ids.find(text);
  KS_CHECK(it != ids.end(), "tokenizer.json: {} '{}' is not in the vocabulary", what, text);
  return it->second;
}

size_t get_size(const json& obj, const char* key, const char* where) {
  const json& v = member(obj, key, where);
  KS_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0, "tokenizer.json: {}.{} must be a non-negative integer",
           where, key);
  return static_cast<size_t>(v.get<int64_t>());
}

int32_t get_id(const json& v, const char* where) {
  KS_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < kMaxTokenId,
           "tokenizer.json: {} must be a token id, not {}", where, v.dump());
  return static_cast<int32_t>(v.get<int64_t>());
}

// TemplateProcessing "single" or "pair": [{"SpecialToken": {"id": name, "type_id": n}} |
// {"Sequence": {"id": "A" | "B", "type_id": n}}, ...]; a name's ids come from "special_tokens", else
// from the vocabulary.
std::vector<TemplatePiece> parse_template(const json& p, const char* key, const IdMap& ids) {
  const json& pieces = member(p, key, "TemplateProcessing");
  KS_CHECK(pieces.is_array(), "tokenizer.json: TemplateProcessing.{} must be an array", key);
  std::vector<TemplatePiece> out;
  for (const json& piece : pieces) {
    TemplatePiece t;
    if (piece.contains("Sequence")) {
      const json& seq = piece["Sequence"];
      const std::string name = get_string(seq, "id", "Sequence");
      KS_CHECK(name == "A" || name == "B", "tokenizer.json: TemplateProcessing sequence '{}' is not A or B", name);
      t.sequence = name == "A" ? 0 : 1;
      t.type_id = get_id(member(seq, "type_id", "Sequence"), "Sequence.type_id");
      out.push_back(std::move(t));
      continue;
    }
    const json& special = member(piece, "SpecialToken", "TemplateProcessing piece");
    const std::string name = get_string(special, "id", "SpecialToken");
    t.type_id = get_id(member(special, "type_id", "SpecialToken"), "SpecialToken.type_id");
    if (auto st = p.find("special_tokens"); st != p.end() && st->is_object() && st->contains(name)) {
      const json& ids_json = member((*st)[name], "ids", "special_tokens entry");
      KS_CHECK(ids_json.is_array() && !ids_json.empty(),
               "tokenizer.json: TemplateProcessing special token '{}' must map to a list of ids", name);
      for (const json& id : ids_json) t.ids.push_back(get_id(id, "a special_tokens id"));
    } else {
      t.ids.push_back(lookup(ids, name, "TemplateProcessing token"));
    }
    out.push_back(std::move(t));
  }
  return out;
}

// BertProcessing / RobertaProcessing "cls" or "sep": [token, id].
TemplatePiece special_piece(const json& p, const char* key, const std::string& type, int32_t type_id) {
  const json& v = member(p, key, type.c_str());
  KS_CHECK(v.is_array() && v.size() == 2 && v[0].is_string(), "tokenizer.json: {} {} must be [token, id]", type, key);
  return {-1, {get_id(v[1], "a cls/sep id")}, type_id};
}

PostTemplate parse_template_processor(const json& p, const std::string& type, const IdMap& ids) {
  if (type == "TemplateProcessing") return {parse_template(p, "single", ids), parse_template(p, "pair", ids)};
  const TemplatePiece cls = special_piece(p, "cls", type, 0);
  if (type == "BertProcessing") {
    const TemplatePiece sep = special_piece(p, "sep", type, 0);
    TemplatePiece sep_b = sep;
    sep_b.type_id = 1;
    return {{cls, {0, {}, 0}, sep}, {cls, {0, {}, 0}, sep, {1, {}, 1}, sep_b}};
  }
  // RoBERTa: <s> A </s> </s> B </s>, every type id 0.
  const TemplatePiece sep = special_piece(p, "sep", type, 0);
  return {{cls, {0, {}, 0}, sep}, {cls, {0, {}, 0}, sep, sep, {1, {}, 0}, sep}};
}

void parse_post_processor(const json& node, const IdMap& ids, TokenizerSpec& spec) {
  for (const json* p : flatten(node, "processors", "post_processor")) {
    const std::string type = type_of(*p, "post_processor");
    if (type == "ByteLevel") continue;  // only adjusts offsets
    KS_CHECK(type == "TemplateProcessing" || type == "BertProcessing" || type == "RobertaProcessing",
             "tokenizer.json: unsupported post_processor '{}'", type);
    KS_CHECK(!spec.post_template, "tokenizer.json: more than one post-processor adds special tokens");
    spec.post_template = parse_template_processor(*p, type, ids);
    if (spec.model == TokenizerModel::wordpiece) continue;  // encode() applies the template itself
    // What encode(add_special) adds as BOS/EOS: one token before and one after the text at most.
    std::vector<const TemplatePiece*> before, after;
    bool seen_sequence = false;
    for (const TemplatePiece& piece : spec.post_template->single) {
      if (piece.sequence >= 0)
        seen_sequence = true;
      else
        (seen_sequence ? after : before).push_back(&piece);
    }
    KS_CHECK(before.size() <= 1 && after.size() <= 1 &&
                 std::all_of(before.begin(), before.end(), [](auto* t) { return t->ids.size() == 1; }) &&
                 std::all_of(after.begin(), after.end(), [](auto* t) { return t->ids.size() == 1; }),
             "tokenizer.json: {} with more than one token before or after the text is not supported", type);
    if (!before.empty()) {
      spec.bos_id = before[0]->ids[0];
      spec.add_bos = true;
    }
    if (!after.empty()) {
      spec.eos_id = after[0]->ids[0];
      spec.add_eos = true;
    }
  }
}

// tokenizer.json "truncation" (null: none).
void parse_truncation(const json& node, TokenizerSpec& spec) {
  if (node.is_null()) return;
  Truncation t;
  t.max_length = get_size(node, "max_length", "truncation");
  t.stride = node.contains("stride") ? get_size(node, "stride", "truncation") : 0;
  static const std::map<std::string, TruncationStrategy, std::less<>> kStrategies = {
      {"LongestFirst", TruncationStrategy::longest_first},
      {"OnlyFirst", TruncationStrategy::only_first},
      {"OnlySecond", TruncationStrategy::only_second}};
  const std::string strategy = node.value("strategy", "LongestFirst");
  const auto it = kStrategies.find(strategy);
  KS_CHECK(it != kStrategies.end(), "tokenizer.json: unknown truncation strategy '{}'", strategy);
  t.strategy = it->second;
  const std::string direction = node.value("direction", "Right");
  KS_CHECK(direction == "Right" || direction == "Left", "tokenizer.json: unknown truncation direction '{}'", direction);
  t.from_left = direction == "Left";
  spec.truncation = t;
}

// tokenizer.json "padding" (null: none): {"strategy": "BatchLongest" | {"Fixed": n}, "direction",
// "pad_to_multiple_of", "pad_id", "pad_type_id"}.
void parse_padding(const json& node, TokenizerSpec& spec) {
  if (node.is_null()) return;
  Padding p;
  const json& strategy = member(node, "strategy", "padding");
  if (strategy.is_object()) {
    p.fixed_length = get_size(strategy, "Fixed", "padding.strategy");
    KS_CHECK(p.fixed_length > 0, "tokenizer.json: padding to a fixed length of 0");
  } else {
    KS_CHECK(strategy == "BatchLongest",
             "tokenizer.json: padding.strategy must be \"BatchLongest\" or {{\"Fixed\": n}}");
  }
  const std::string direction = node.value("direction", "Right");
  KS_CHECK(direction == "Right" || direction == "Left", "tokenizer.json: unknown padding direction '{}'", direction);
  p.left = direction == "Left";
  if (auto it = node.find("pad_to_multiple_of"); it != node.end() && !it->is_null())
    p.multiple_of = get_size(node, "pad_to_multiple_of", "padding");
  p.pad_id = node.contains("pad_id") ? get_id(node["pad_id"], "padding.pad_id") : 0;
  p.pad_type_id = node.contains("pad_type_id") ? get_id(node["pad_type_id"], "padding.pad_type_id") : 0;
  spec.padding = p;
}

// tokenizer_config.json tokens are either a string or an AddedToken object {"content": ...}.
std::optional<std::string> config_token(const json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  KS_FAIL("tokenizer_config.json: \"{}\" must be a string or an object with \"content\"", key);
}

void parse_bpe_model(const json& model, const IdMap& ids, TokenizerSpec& spec) {
  const json empty_array = json::array();
  const json& merges = model.contains("merges") ? model["merges"] : empty_array;
  KS_CHECK(merges.is_array(), "tokenizer.json: model.merges must be an array");
  spec.merges.reserve(merges.size());
  for (const json& m : merges) {
    if (m.is_string()) {
      // The legacy "left right" form: exactly one space (HF rejects anything else too).
      const std::string s = m.get<std::string>();
      const size_t sep = s.find(' ');
      KS_CHECK(sep != std::string::npos && s.find(' ', sep + 1) == std::string::npos,
               "tokenizer.json: merge '{}' must be two tokens separated by one space", s);
      spec.merges.emplace_back(s.substr(0, sep), s.substr(sep + 1));
    } else {
      KS_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
               "tokenizer.json: merge {} must be a string or a pair of strings", m.dump());
      spec.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    }
  }
  spec.ignore_merges = get_bool(model, "ignore_merges", false);
  spec.byte_fallback = get_bool(model, "byte_fallback", false);
  spec.fuse_unk = get_bool(model, "fuse_unk", false);
  if (auto it = model.find("unk_token"); it != model.end() && !it->is_null()) {
    KS_CHECK(it->is_string(), "tokenizer.json: model.unk_token must be a string");
    spec.unk_id = lookup(ids, it->get<std::string>(), "unk_token");
  }
  if (spec.byte_fallback) {
    for (size_t id = 0; id < spec.tokens.size(); ++id) {
      const std::string& t = spec.tokens[id];
      if (t.size() == 6 && t.starts_with("<0x") && t.back() == '>' && spec.token_types[id] == TokenType::normal)
        spec.token_types[id] = TokenType::byte;
    }
  }
}

// HF's defaults for a missing field: unk_token "[UNK]", continuing_subword_prefix "##",
// max_input_chars_per_word 100.
void parse_wordpiece_model(const json& model, const IdMap& ids, TokenizerSpec& spec) {
  const std::string unk = model.contains("unk_token") ? get_string(model, "unk_token", "model") : "[UNK]";
  spec.unk_id = lookup(ids, unk, "WordPiece unk_token");
  if (model.contains("continuing_subword_prefix"))
    spec.wordpiece.continuing_subword_prefix = get_string(model, "continuing_subword_prefix", "model");
  if (model.contains("max_input_chars_per_word"))
    spec.wordpiece.max_input_chars_per_word = get_size(model, "max_input_chars_per_word", "model");
  KS_CHECK(spec.wordpiece.max_input_chars_per_word > 0,
           "tokenizer.json: WordPiece max_input_chars_per_word must be > 0");
}

TokenizerSpec parse(const json& tj, const json* config) {
  KS_CHECK(tj.is_object(), "tokenizer.json: the document must be a JSON object");
  const json& model = member(tj, "model", "tokenizer.json");
  const std::string model_type = model.value("type", "BPE");
  KS_CHECK(model_type == "BPE" || model_type == "WordPiece",
           "tokenizer.json: model type '{}' is not supported (only BPE and WordPiece)", model_type);
  const bool wordpiece = model_type == "WordPiece";
  if (!wordpiece) {
    KS_CHECK(!model.contains("dropout") || model["dropout"].is_null() || model["dropout"] == 0,
             "tokenizer.json: BPE dropout is not supported at inference");
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      auto it = model.find(key);
      KS_CHECK(it == model.end() || it->is_null() || (it->is_string() && it->get<std::string>().empty()),
               "tokenizer.json: BPE {} is not supported", key);
    }
  }

  TokenizerSpec spec;
  spec.pre_name = "hf";
  // Vocabulary: model.vocab plus added tokens (whose ids may lie beyond it).
  const json& vocab = member(model, "vocab", "model");
  KS_CHECK(vocab.is_object(), "tokenizer.json: model.vocab must be an object");
  IdMap ids;
  int64_t max_id = -1;
  auto check_token_id = [&](const json& v, const std::string& text) {
    KS_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < kMaxTokenId,
             "tokenizer.json: token '{}' has an invalid id {}", text, v.dump());
    max_id = std::max(max_id, v.get<int64_t>());
    return static_cast<int32_t>(v.get<int64_t>());
  };
  for (auto it = vocab.begin(); it != vocab.end(); ++it) ids.emplace(it.key(), check_token_id(it.value(), it.key()));
  const json empty_array = json::array();
  const json& added = tj.contains("added_tokens") && !tj["added_tokens"].is_null() ? tj["added_tokens"] : empty_array;
  KS_CHECK(added.is_array(), "tokenizer.json: added_tokens must be an array");
  for (const json& a : added) {
    AddedToken t;
    t.content = get_string(a, "content", "added token");
    t.id = check_token_id(member(a, "id", "added token"), t.content);
    t.special = get_bool(a, "special", false);
    t.lstrip = get_bool(a, "lstrip", false);
    t.rstrip = get_bool(a, "rstrip", false);
    t.single_word = get_bool(a, "single_word", false);
    KS_CHECK(!t.content.empty(), "tokenizer.json: added token {} has empty content", t.id);
    ids[t.content] = t.id;
    spec.added_tokens.push_back(std::move(t));
  }
  KS_CHECK(max_id >= 0, "tokenizer.json: the vocabulary is empty");
  spec.tokens.assign(max_id + 1, std::string());
  spec.token_types.assign(max_id + 1, TokenType::unused);  // ids nobody defines stay unused
  for (const auto& [text, id] : ids) {
    if (spec.token_types[id] != TokenType::unused)
      KS_CHECK(spec.tokens[id] == text, "tokenizer.json: id {} is used by both '{}' and '{}'", id, spec.tokens[id],
               text);
    spec.tokens[id] = text;
    spec.token_types[id] = TokenType::normal;
  }
  for (const AddedToken& t : spec.added_tokens) {
    spec.tokens[t.id] = t.content;  // the added token's text is what HF decodes
    spec.token_types[t.id] = t.special ? TokenType::control : TokenType::user_defined;
  }

  if (wordpiece)
    parse_wordpiece_model(model, ids, spec);
  else
    parse_bpe_model(model, ids, spec);

  parse_normalizer(tj.value("normalizer", json()), spec);
  const bool byte_level_pre = parse_pre_tokenizer(tj.value("pre_tokenizer", json()), spec);
  const bool byte_level_dec = parse_decoder(tj.value("decoder", json()), spec);
  const bool byte_level = byte_level_pre || byte_level_dec;
  KS_CHECK(!spec.bert_pre_tokenizer || spec.pre_splits.empty(),
           "tokenizer.json: BertPreTokenizer together with other pre-tokenizers is not supported");
  KS_CHECK(!spec.bert_normalizer || (!spec.nfc && !spec.escape_whitespace && spec.space_prefix == SpacePrefix::none),
           "tokenizer.json: BertNormalizer together with other normalizers is not supported");
  if (wordpiece) {
    spec.model = TokenizerModel::wordpiece;
    KS_CHECK(!byte_level && !spec.escape_whitespace && spec.space_prefix == SpacePrefix::none &&
                 spec.decode_space_prefix == DecodeSpacePrefix::keep,
             "tokenizer.json: WordPiece with ByteLevel, Metaspace, Prepend or Strip is not supported");
  } else {
    KS_CHECK(!spec.bert_normalizer && !spec.bert_pre_tokenizer && !spec.wordpiece_decoder,
             "tokenizer.json: BertNormalizer, BertPreTokenizer and the WordPiece decoder are only supported with a "
             "WordPiece model");
    spec.model = byte_level ? TokenizerModel::byte_level_bpe : TokenizerModel::sentencepiece_bpe;
    KS_CHECK(!byte_level || (!spec.escape_whitespace && spec.space_prefix == SpacePrefix::none),
             "tokenizer.json: mixing ByteLevel with ▁ (Metaspace/Prepend) is not supported");
    KS_CHECK(byte_level || !spec.merges.empty(), "tokenizer.json: a non-byte-level BPE needs merges");
  }
  parse_post_processor(tj.value("post_processor", json()), ids, spec);
  parse_truncation(tj.value("truncation", json()), spec);
  parse_padding(tj.value("padding", json()), spec);

  if (config != nullptr) {
    KS_CHECK(config->is_object(), "tokenizer_config.json: the document must be a JSON object");
    // Like llama.cpp's converter, the config's tokens and add_*_token flags win over the template.
    if (auto t = config_token(*config, "bos_token")) spec.bos_id = lookup(ids, *t, "bos_token");
    if (auto t = config_token(*config, "eos_token")) spec.eos_id = lookup(ids, *t, "eos_token");
    if (auto t = config_token(*config, "pad_token")) spec.pad_id = lookup(ids, *t, "pad_token");
    // WordPiece replaces unknown words with its model's unk_token, whatever the config names.
    if (auto t = config_token(*config, "unk_token"); t && !wordpiece) spec.unk_id = lookup(ids, *t, "unk_token");
    spec.add_bos = get_bool(*config, "add_bos_token", spec.add_bos);
    spec.add_eos = get_bool(*config, "add_eos_token", spec.add_eos);
  }
  validate_spec(spec);
  return spec;
}

}  // namespace

TokenizerSpec spec_from_tokenizer_json(const nlohmann::json& tokenizer_json,
                                       const nlohmann::json* tokenizer_config_json) {
  try {
    return parse(tokenizer_json, tokenizer_config_json);
  } catch (const nlohmann::json::exception& e) {
    // Type mismatches deep in the document (e.g. a number where a string belongs).
    KS_FAIL("tokenizer.json: malformed document: {}", e.what());
  }
}

}  // namespace kestrel
