// TokenizerSpec: a neutral description of a tokenizer, filled either from GGUF metadata or from a
// Hugging Face tokenizer.json (+ tokenizer_config.json). The Tokenizer class builds its tables from it
// and never looks at either source format.
//
// GGUF keys and how they map (llama.cpp semantics):
//   tokenizer.ggml.model            "gpt2" -> TokenizerModel::byte_level_bpe
//                                   "llama" -> TokenizerModel::sentencepiece_bpe (merge by score, byte
//                                   fallback, ▁ for spaces); anything else -> kestrel::Error
//   tokenizer.ggml.tokens           -> tokens (id = index); byte-level vocabularies are stored in
//                                   GPT-2's byte<->unicode form, SentencePiece ones with ▁ and <0xNN>
//   tokenizer.ggml.scores           -> scores (sentencepiece_bpe: higher merges first; required there)
//   tokenizer.ggml.token_type       -> token_types (GGUF numbering, see TokenType; default normal)
//   tokenizer.ggml.merges           -> merges ("left right", rank = index; required for gpt2, ignored
//                                   for llama, which merges by score like llama.cpp)
//   tokenizer.ggml.pre              -> pre_name and pre_splits (see pre_tokenizer_preset(); "default"
//                                   or missing = GPT-2's regex); unknown names -> kestrel::Error
//   tokenizer.ggml.bos_token_id / eos_token_id / unknown_token_id / padding_token_id / eot_token_id /
//   eom_token_id                    -> bos_id / eos_id / unk_id / pad_id / eot_id / eom_id (-1 = none)
//   tokenizer.ggml.add_bos_token    -> add_bos (default: true for llama, false for gpt2)
//   tokenizer.ggml.add_eos_token    -> add_eos (default false)
//   tokenizer.ggml.add_space_prefix -> sentencepiece_bpe only: space_prefix = every_segment when true
//                                   (default true), none when false; like llama.cpp, a space is put
//                                   before the text at the start and after every special token.
// Token types control and user_defined become added tokens: user_defined ones are always matched in
// the text (special = false), control ones only when encode() is asked to parse special tokens.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kestrel {

class GgufFile;

enum class TokenizerModel {
  byte_level_bpe,     // GPT-2 style: text bytes mapped to visible characters, merges by rank
  sentencepiece_bpe,  // Llama-2/Mistral style: ▁ for spaces, merges by rank or score, <0xNN> fallback
  wordpiece,          // BERT style: each word split greedily into the longest vocabulary pieces
};

// GGUF token types (llama.cpp's llama_token_type numbering).
enum class TokenType : int32_t {
  undefined = 0,
  normal = 1,
  unknown = 2,
  control = 3,
  user_defined = 4,
  unused = 5,
  byte = 6,
};

// A token that is cut out of the text before pre-tokenization (tokenizer.json "added_tokens", or GGUF
// control/user-defined tokens).
struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;      // matched only when encode(parse_special = true); skipped by skip_special
  bool lstrip = false;       // the match swallows whitespace on its left
  bool rstrip = false;       // the match swallows whitespace on its right
  bool single_word = false;  // only matches when not glued to letters/digits on either side
};

// How a regex split treats what the pattern matches (Hugging Face SplitDelimiterBehavior).
enum class SplitBehavior { isolated, removed, merged_with_previous, merged_with_next, contiguous };

// One pre-tokenizer split step: every current piece is split with `regex` (PCRE2, UTF + Unicode
// properties). Steps run in order, each on the pieces of the previous one.
struct PreTokenizerSplit {
  std::string regex;
  SplitBehavior behavior = SplitBehavior::isolated;
  bool invert = false;  // split on what does NOT match
};

// When the SentencePiece ▁ is put in front of a text segment (segments are the text between added
// tokens).
enum class SpacePrefix {
  none,
  first,          // only the segment that starts the text (HF Metaspace prepend_scheme "first")
  every_segment,  // every segment (HF Prepend normalizer / Metaspace "always", llama.cpp GGUF)
};

// How decoding undoes the ▁ put before the text.
enum class DecodeSpacePrefix {
  keep,
  strip_leading_space,   // drop one space at the start of the decoded text (HF Strip decoder, llama.cpp)
  strip_first_token_ws,  // drop every ▁ of the first token (HF Metaspace decoder)
};

// Hugging Face BertNormalizer (strip_accents already resolved: tokenizer.json's null means `lowercase`).
struct BertNormalizerOptions {
  bool clean_text = true;
  bool handle_chinese_chars = true;
  bool strip_accents = true;
  bool lowercase = true;
};

// Hugging Face WordPiece model: a word is split into the longest vocabulary entry at its start, then the
// longest prefix-marked entry ("##ing") at each later position; a word with a position no entry covers,
// or longer than max_input_chars_per_word characters, becomes unk_id alone.
struct WordPieceOptions {
  std::string continuing_subword_prefix = "##";
  size_t max_input_chars_per_word = 100;
};

// Hugging Face WordPiece decoder: tokens are joined with spaces, except that a token starting with
// `prefix` is glued to the previous one without it; `cleanup` removes the space before . ? ! , and
// English contractions.
struct WordPieceDecoderOptions {
  std::string prefix = "##";
  bool cleanup = true;
};

// One piece of a post-processing template: one of the input texts, or special tokens; either way its
// tokens get `type_id` as their token type.
struct TemplatePiece {
  int32_t sequence = -1;     // 0: the first text (A), 1: the second (B), -1: the special tokens `ids`
  std::vector<int32_t> ids;  // sequence == -1 only
  int32_t type_id = 0;
};

// Where special tokens go around one text and around a pair of texts (HF TemplateProcessing,
// BertProcessing, RobertaProcessing). Without a post-processor: A then B, type ids 0 and 1.
struct PostTemplate {
  std::vector<TemplatePiece> single;
  std::vector<TemplatePiece> pair;
};

enum class TruncationStrategy { longest_first, only_first, only_second };

// tokenizer.json "truncation": texts are cut so that ids (special tokens included) fit max_length.
struct Truncation {
  size_t max_length = 0;
  TruncationStrategy strategy = TruncationStrategy::longest_first;
  bool from_left = false;  // drop tokens at the start instead of the end
  size_t stride = 0;       // only checked (HF puts the cut-off tokens in overflow windows, not returned here)
};

// tokenizer.json "padding": every encoding of a batch is padded to `fixed_length`, or with 0 there to
// the longest of the batch, then up to a multiple of `multiple_of` (0: none).
struct Padding {
  size_t fixed_length = 0;
  size_t multiple_of = 0;
  bool left = false;
  int32_t pad_id = 0;
  int32_t pad_type_id = 0;
};

struct TokenizerSpec {
  TokenizerModel model = TokenizerModel::byte_level_bpe;
  std::vector<std::string> tokens;                          // id -> vocabulary string
  std::vector<float> scores;                                // empty, or one per token (merge priority without merges)
  std::vector<TokenType> token_types;                       // empty (all normal), or one per token
  std::vector<std::pair<std::string, std::string>> merges;  // by rank, highest priority first
  std::vector<AddedToken> added_tokens;                     // their ids must be < tokens.size()

  // Normalization and pre-tokenization.
  std::string pre_name;                          // informational: GGUF tokenizer.ggml.pre or "hf"
  std::vector<PreTokenizerSplit> pre_splits;     // empty: each text segment is one word
  bool byte_level_prefix_space = false;          // HF ByteLevel add_prefix_space: " " before segments
  bool nfc = false;                              // normalize each text segment to Unicode NFC (HF "NFC")
  bool escape_whitespace = false;                // sentencepiece: spaces become ▁ before BPE
  SpacePrefix space_prefix = SpacePrefix::none;  // sentencepiece: when to put ▁ before a segment
  bool space_prefix_if_missing = false;          // ... only when the segment does not already start with a space
  std::optional<BertNormalizerOptions> bert_normalizer;  // BERT's normalizer on each text segment
  bool bert_pre_tokenizer = false;  // words split at whitespace and around punctuation (instead of pre_splits)

  // Model options.
  bool ignore_merges = false;  // a pre-token that is itself in the vocabulary is emitted as is
  bool byte_fallback = false;  // characters missing from the vocabulary become <0xNN> tokens
  bool fuse_unk = false;       // consecutive unknown characters produce one unk token
  WordPieceOptions wordpiece;  // model == wordpiece only

  // Decoding.
  DecodeSpacePrefix decode_space_prefix = DecodeSpacePrefix::keep;
  // model == wordpiece: how tokens are joined (none: with a space between every two, HF's default).
  std::optional<WordPieceDecoderOptions> wordpiece_decoder;

  // What an encoder's inputs get (encoder_inputs.h): the post-processor's templates (none: A then B, no
  // special tokens), and tokenizer.json's truncation and padding (none: neither).
  std::optional<PostTemplate> post_template;
  std::optional<Truncation> truncation;
  std::optional<Padding> padding;

  // Special ids (-1 = none) and what add_special adds.
  int32_t bos_id = -1, eos_id = -1, unk_id = -1, pad_id = -1, eot_id = -1, eom_id = -1;
  bool add_bos = false;
  bool add_eos = false;
  // End-of-generation ids besides eos/eot/eom; Tokenizer also adds the well-known end-of-turn tokens
  // (<|im_end|>, <|eot_id|>, <|endoftext|>, ...) found among the special added tokens.
  std::vector<int32_t> extra_eog_ids;
};

// The pre-tokenizer splits for a GGUF tokenizer.ggml.pre name ("default", "gpt-2", "llama-bpe"/"llama3",
// "qwen2", "smollm", ...). Throws kestrel::Error for an unknown name.
std::vector<PreTokenizerSplit> pre_tokenizer_preset(const std::string& name);

// The values of the GGUF tokenizer.ggml.* keys (see the table above); optional ones are nullopt when
// the key is absent.
struct GgufTokenizerFields {
  std::string model;  // tokenizer.ggml.model
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> token_types;
  std::vector<std::string> merges;
  std::optional<std::string> pre;
  std::optional<int64_t> bos_id, eos_id, unk_id, pad_id, eot_id, eom_id;
  std::optional<bool> add_bos, add_eos, add_space_prefix;
};

// Builds and validates a spec from GGUF fields; throws kestrel::Error naming the offending key.
TokenizerSpec spec_from_gguf_fields(const GgufTokenizerFields& fields);

// Reads the tokenizer.ggml.* keys of an open GGUF file and calls spec_from_gguf_fields.
TokenizerSpec spec_from_gguf(const GgufFile& file);

// Builds a spec from a Hugging Face tokenizer.json (model.type "BPE" or "WordPiece") and, when given, its
// tokenizer_config.json (add_bos_token / add_eos_token / bos_token / eos_token / pad_token). Supports
// the normalizers Prepend, Replace (string), BertNormalizer, Sequence; the pre-tokenizers ByteLevel,
// Split, Digits, Metaspace, BertPreTokenizer, Sequence; the decoders ByteLevel, Metaspace, Replace,
// ByteFallback, Fuse, Strip, WordPiece, Sequence; the post-processors TemplateProcessing,
// BertProcessing, RobertaProcessing, ByteLevel, Sequence; "truncation" and "padding". Anything else, or
// a malformed document, throws kestrel::Error rather than tokenizing differently from Hugging Face.
TokenizerSpec spec_from_tokenizer_json(const nlohmann::json& tokenizer_json,
                                       const nlohmann::json* tokenizer_config_json = nullptr);

// Checks the internal consistency of a spec (sizes, ids in range, merges refer to tokens); throws
// kestrel::Error describing the first problem.
void validate_spec(const TokenizerSpec& spec);

}  // namespace kestrel
