// Tokenizer: byte-level BPE (GPT-2, Llama-3, Qwen2, SmolLM2 ...), SentencePiece-style BPE with byte
// fallback (Llama-2, Mistral) and BERT's WordPiece, built from a TokenizerSpec. Encoding matches Hugging
// Face `tokenizers` id for id (tests/tokenizer compares against golden ids from it). A Tokenizer is
// immutable after construction and safe to use from many threads at once. Encoder models take their
// batched inputs (token types, attention mask, truncation, padding) from encoder_inputs.h.
//
// Text that is not valid UTF-8 is first repaired the way Python's bytes.decode(errors="replace") does
// (one U+FFFD per maximal invalid subpart), so encode(bytes) == HF encode(bytes.decode(errors="replace")).
// Decoded text is repaired the same way (Rust's from_utf8_lossy, which HF uses).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/tokenizer_spec.h"

namespace kestrel {

class Tokenizer {
 public:
  // Validates the spec and builds the lookup tables; throws kestrel::Error for an inconsistent spec.
  explicit Tokenizer(TokenizerSpec spec);

  // add_special: add BOS/EOS as the spec says (WordPiece: the special tokens of the post-processor's
  // single-text template, e.g. [CLS] text [SEP]). parse_special: recognise the text of special tokens
  // (e.g. "<|im_start|>") as those tokens; when false such text is tokenized as ordinary text (HF's
  // split_special_tokens=True). Non-special added tokens are always recognised.
  std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special) const;

  // Concatenated text of the tokens; skip_special drops special tokens (BOS, <|im_end|>, ...).
  // Throws kestrel::Error for an id outside the vocabulary.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // The vocabulary string of a token as stored (byte-level or ▁ form). Throws for a bad id.
  const std::string& token_text(int32_t id) const;
  // The raw bytes this token stands for when decoded on its own (may be part of a UTF-8 character).
  const std::string& token_bytes(int32_t id) const;
  // The id whose vocabulary string is exactly `text`, if any.
  std::optional<int32_t> find_token(std::string_view text) const;

  int32_t vocab_size() const { return static_cast<int32_t>(spec_.tokens.size()); }
  int32_t bos_id() const { return spec_.bos_id; }
  int32_t eos_id() const { return spec_.eos_id; }
  // The end-of-turn token: the spec's eot id, else the first of <|eot_id|>, <|im_end|>, <|end|>,
  // <end_of_turn> that the vocabulary has, else -1.
  int32_t eot_id() const { return eot_id_; }
  int32_t pad_id() const { return spec_.pad_id; }
  int32_t unk_id() const { return spec_.unk_id; }
  bool add_bos() const { return spec_.add_bos; }
  // True for tokens that end generation: eos, eot, eom, and well-known end-of-turn special tokens.
  bool is_eog(int32_t id) const;
  // True for special tokens (what decode(skip_special = true) drops).
  bool is_special(int32_t id) const;
  const std::vector<int32_t>& eog_ids() const { return eog_ids_; }
  const TokenizerSpec& spec() const { return spec_; }

 private:
  friend class StreamDecoder;
  struct Merge {
    int32_t rank;
    int32_t id;
  };

  void build_merges();
  void build_pieces();
  void build_added_token_index();
  using WordCache = std::unordered_map<std::string, std::vector<int32_t>>;
  void encode_segment(std::string_view segment, bool starts_text, std::vector<int32_t>& out, WordCache& cache) const;
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;
  void initial_symbols(std::string_view word, std::vector<int32_t>& symbols) const;
  void apply_merges(std::vector<int32_t>& symbols) const;
  void check_id(int32_t id) const;
  // Finds the next added token at or after `from`; returns false when there is none.
  bool next_added_token(std::string_view text, size_t from, bool parse_special, size_t& begin, size_t& end,
                        int32_t& id) const;

  TokenizerSpec spec_;
  PreTokenizer pre_tokenizer_;
  std::unordered_map<std::string_view, int32_t> token_ids_;  // views into spec_.tokens
  std::unordered_map<uint64_t, Merge> merges_;               // (left id << 32 | right id) -> merge
  std::vector<std::string> pieces_;                          // id -> decoded bytes
  std::vector<uint8_t> special_;                             // id -> skipped by skip_special
  std::vector<uint8_t> is_spm_word_;  // id -> a sentencepiece vocabulary piece (its ▁ became spaces)
  std::vector<int32_t> byte_token_;   // raw byte -> its token (-1: none)
  std::vector<std::vector<const AddedToken*>> added_by_first_byte_;  // longest first
  std::vector<int32_t> eog_ids_;
  int32_t eot_id_ = -1;
};

// Turns a stream of generated ids into text pieces that are always whole UTF-8 characters: bytes of a
// character split across tokens (byte-level BPE pieces or <0xNN> fallback tokens) are held back until
// the character is complete. The concatenation of every push() and the final flush() equals
// Tokenizer::decode() of all the ids.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special = false)
      : tokenizer_(&tokenizer), skip_special_(skip_special) {}

  // Appends a token; returns the text that became complete (possibly empty). Throws for a bad id.
  std::string push(int32_t id);
  // Returns whatever is held back, with an incomplete trailing character replaced by U+FFFD (call at
  // the end of the stream).
  std::string flush();

 private:
  void append_bpe_piece(const std::string& bytes, bool spm_word);

  const Tokenizer* tokenizer_;
  bool skip_special_;
  bool at_start_ = true;
  std::string pending_;
};

}  // namespace kestrel
