#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <queue>

#include "core/error.h"
#include "core/log.h"
#include "tokenizer/bert_normalizer.h"
#include "tokenizer/bert_pre_tokenizer.h"
#include "tokenizer/unicode.h"
#include "tokenizer/wordpiece.h"

namespace kestrel {
namespace {

constexpr std::string_view kSpmSpace = "\xE2\x96\x81";  // ▁ U+2581
// Pre-tokens longer than this are rare and unlikely to repeat, so they skip the per-call cache.
constexpr size_t kMaxCachedWordBytes = 64;

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// Start of the UTF-8 character that ends right before `pos` (text is valid UTF-8).
size_t previous_char_start(std::string_view text, size_t pos) {
  size_t p = pos - 1;
  while (p > 0 && (static_cast<uint8_t>(text[p]) & 0xC0) == 0x80) --p;
  return p;
}

bool whitespace_at(std::string_view text, size_t pos, size_t& len) {
  len = unicode::valid_sequence_length(text.substr(pos));
  // HF's lstrip/rstrip use Rust's char::is_whitespace.
  return len != 0 && unicode::is_white_space(unicode::decode_code_point(text.substr(pos), len));
}

// Letters, digits, marks and '_' count as word characters for single_word added tokens; everything
// else (spaces, punctuation, symbols) is a boundary. ASCII is exact; beyond ASCII anything that is not
// whitespace is treated as part of a word, which is right for letters of every script.
bool is_word_char_at(std::string_view text, size_t pos) {
  size_t len = 0;
  if (whitespace_at(text, pos, len)) return false;
  const auto c = static_cast<uint8_t>(text[pos]);
  if (c < 0x80) return std::isalnum(c) || c == '_';
  return true;
}

// The byte a SentencePiece byte-fallback token "<0xNN>" stands for, or -1.
int parse_byte_token(std::string_view text) {
  if (text.size() != 6 || text.substr(0, 3) != "<0x" || text[5] != '>') return -1;
  int value = 0;
  for (const char c : text.substr(3, 2)) {
    value <<= 4;
    if (c >= '0' && c <= '9')
      value |= c - '0';
    else if (c >= 'A' && c <= 'F')
      value |= c - 'A' + 10;
    else if (c >= 'a' && c <= 'f')
      value |= c - 'a' + 10;
    else
      return -1;
  }
  return value;
}

constexpr std::string_view kEndOfTurnNames[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>"};
constexpr std::string_view kEndOfGenerationNames[] = {"<|eot_id|>",    "<|im_end|>",     "<|end|>", "<end_of_turn>",
                                                      "<|endoftext|>", "<|eom_id|>",     "<EOT>",   "<|return|>",
                                                      "<|call|>",      "<|end_of_text|>"};

}  // namespace

Tokenizer::Tokenizer(TokenizerSpec spec) : spec_(std::move(spec)), pre_tokenizer_(spec_.pre_splits) {
  validate_spec(spec_);
  const auto n = static_cast<int32_t>(spec_.tokens.size());
  token_ids_.reserve(spec_.tokens.size());
  for (int32_t id = 0; id < n; ++id) token_ids_.emplace(spec_.tokens[id], id);

  byte_token_.assign(256, -1);
  for (int b = 0; b < 256; ++b) {
    std::string text;
    if (spec_.model == TokenizerModel::byte_level_bpe)
      unicode::append_byte_level(text, std::string_view(reinterpret_cast<const char*>(&b), 1));
    else
      text = fmt::format("<0x{:02X}>", b);
    if (auto id = find_token(text)) byte_token_[b] = *id;
  }
  build_merges();
  build_pieces();
  build_added_token_index();

  eot_id_ = spec_.eot_id;
  for (std::string_view name : kEndOfTurnNames) {
    if (eot_id_ >= 0) break;
    if (auto id = find_token(name); id && special_[*id]) eot_id_ = *id;
  }
  auto add_eog = [&](int32_t id) {
    if (id >= 0 && std::find(eog_ids_.begin(), eog_ids_.end(), id) == eog_ids_.end()) eog_ids_.push_back(id);
  };
  add_eog(spec_.eos_id);
  add_eog(eot_id_);
  add_eog(spec_.eom_id);
  for (int32_t id : spec_.extra_eog_ids) add_eog(id);
  for (std::string_view name : kEndOfGenerationNames)
    if (auto id = find_token(name); id && special_[*id]) add_eog(*id);
}

void Tokenizer::build_merges() {
  if (!spec_.merges.empty()) {
    size_t skipped = 0;
    merges_.reserve(spec_.merges.size());
    for (size_t rank = 0; rank < spec_.merges.size(); ++rank) {
      const auto& [left, right] = spec_.merges[rank];
      const auto l = find_token(left), r = find_token(right), m = find_token(left + right);
      if (!l || !r || !m) {
        ++skipped;
        continue;
      }
      merges_.try_emplace(pair_key(*l, *r), Merge{static_cast<int32_t>(rank), *m});
    }
    // Converters have shipped merges whose parts are not in the vocabulary; they can never apply.
    if (skipped != 0)
      log::warn("tokenizer: ignored {} merges that refer to tokens missing from the vocabulary", skipped);
    return;
  }
  if (spec_.scores.empty()) return;
  // SentencePiece BPE without explicit merges (GGUF "llama"): any two tokens whose concatenation is a
  // token merge, higher score of the result first. Equal scores get equal rank so that, like
  // llama.cpp, the leftmost such pair merges first.
  std::vector<float> distinct(spec_.scores);
  std::sort(distinct.begin(), distinct.end(), std::greater<>());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  for (int32_t id = 0; id < vocab_size(); ++id) {
    const std::string_view text = spec_.tokens[id];
    if (token_ids_.at(text) != id) continue;  // a duplicate string: the first id owns it
    const auto rank = static_cast<int32_t>(
        std::lower_bound(distinct.begin(), distinct.end(), spec_.scores[id], std::greater<>()) - distinct.begin());
    for (size_t k = unicode::valid_sequence_length(text); k > 0 && k < text.size();) {
      const auto l = find_token(text.substr(0, k)), r = find_token(text.substr(k));
      if (l && r) merges_.try_emplace(pair_key(*l, *r), Merge{rank, id});
      const size_t step = unicode::valid_sequence_length(text.substr(k));
      if (step == 0) break;
      k += step;
    }
  }
}

void Tokenizer::build_pieces() {
  const auto n = static_cast<size_t>(vocab_size());
  pieces_.resize(n);
  special_.assign(n, 0);
  is_spm_word_.assign(n, 0);
  std::vector<uint8_t> added(n, 0);
  for (const AddedToken& t : spec_.added_tokens) {
    added[t.id] = 1;
    if (t.special) special_[t.id] = 1;
  }
  for (size_t id = 0; id < n; ++id) {
    const std::string& text = spec_.tokens[id];
    const TokenType type = spec_.token_types.empty() ? TokenType::normal : spec_.token_types[id];
    if (type == TokenType::control || type == TokenType::unknown) special_[id] = 1;
    std::string& piece = pieces_[id];
    is_spm_word_[id] = 0;
    if (added[id] || type == TokenType::control || type == TokenType::unknown || type == TokenType::user_defined ||
        spec_.model == TokenizerModel::wordpiece) {
      piece = text;  // added tokens decode to their text verbatim, WordPiece tokens through its decoder
    } else if (const int byte = parse_byte_token(text); byte >= 0 && (type == TokenType::byte || spec_.byte_fallback)) {
      piece.assign(1, static_cast<char>(byte));
    } else if (spec_.model == TokenizerModel::byte_level_bpe) {
      // A token with characters outside the byte map decodes to its own text, as in HF's ByteLevel.
      if (!unicode::decode_byte_level(text, piece)) piece = text;
    } else {
      is_spm_word_[id] = 1;
      for (size_t pos = 0; pos < text.size();) {
        if (text.compare(pos, kSpmSpace.size(), kSpmSpace) == 0) {
          piece.push_back(' ');
          pos += kSpmSpace.size();
        } else {
          piece.push_back(text[pos++]);
        }
      }
    }
  }
}

void Tokenizer::build_added_token_index() {
  added_by_first_byte_.assign(256, {});
  for (const AddedToken& t : spec_.added_tokens)
    if (!t.content.empty()) added_by_first_byte_[static_cast<uint8_t>(t.content[0])].push_back(&t);
  for (auto& group : added_by_first_byte_)
    std::stable_sort(group.begin(), group.end(),
                     [](const AddedToken* a, const AddedToken* b) { return a->content.size() > b->content.size(); });
}

bool Tokenizer::next_added_token(std::string_view text, size_t from, bool parse_special, size_t& begin, size_t& end,
                                 int32_t& id) const {
  for (size_t pos = from; pos < text.size(); ++pos) {
    const auto& group = added_by_first_byte_[static_cast<uint8_t>(text[pos])];
    for (const AddedToken* t : group) {
      if (t->special && !parse_special) continue;
      if (text.compare(pos, t->content.size(), t->content) != 0) continue;
      size_t b = pos, e = pos + t->content.size();
      if (t->single_word && ((b > 0 && is_word_char_at(text, previous_char_start(text, b))) ||
                             (e < text.size() && is_word_char_at(text, e))))
        continue;
      size_t len = 0;
      if (t->lstrip)
        while (b > from && whitespace_at(text, previous_char_start(text, b), len)) b = previous_char_start(text, b);
      if (t->rstrip)
        while (e < text.size() && whitespace_at(text, e, len)) e += len;
      begin = b;
      end = e;
      id = t->id;
      return true;
    }
  }
  return false;
}

std::vector<int32_t> Tokenizer::encode(std::string_view input, bool add_special, bool parse_special) const {
  std::string repaired;
  std::string_view text = input;
  if (!unicode::is_valid_utf8(text)) {
    repaired = unicode::sanitize_utf8(text);
    text = repaired;
  }
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (add_special && spec_.add_bos && spec_.bos_id >= 0) out.push_back(spec_.bos_id);
  WordCache cache;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t begin = text.size(), end = text.size();
    int32_t id = -1;
    const bool found = next_added_token(text, pos, parse_special, begin, end, id);
    if (begin > pos) encode_segment(text.substr(pos, begin - pos), pos == 0, out, cache);
    if (!found) break;
    out.push_back(id);
    pos = end;
  }
  if (add_special && spec_.add_eos && spec_.eos_id >= 0) out.push_back(spec_.eos_id);
  if (add_special && spec_.model == TokenizerModel::wordpiece && spec_.post_template) {
    // The special tokens of the single-text template ([CLS] A [SEP]) around the text's tokens.
    std::vector<int32_t> wrapped;
    wrapped.reserve(out.size() + 4);
    for (const TemplatePiece& piece : spec_.post_template->single)
      wrapped.insert(wrapped.end(), piece.sequence < 0 ? piece.ids.begin() : out.begin(),
                     piece.sequence < 0 ? piece.ids.end() : out.end());
    return wrapped;
  }
  return out;
}

void Tokenizer::encode_segment(std::string_view segment, bool starts_text, std::vector<int32_t>& out,
                               WordCache& cache) const {
  std::string composed;
  if (spec_.nfc) {
    composed = unicode::nfc(segment);
    segment = composed;
  }
  std::string normalized;
  if (spec_.bert_normalizer) {
    normalized = bert_normalize(segment, *spec_.bert_normalizer);
    segment = normalized;  // may now be empty
  } else if (spec_.model == TokenizerModel::sentencepiece_bpe) {
    const bool prefix = (spec_.space_prefix == SpacePrefix::every_segment ||
                         (spec_.space_prefix == SpacePrefix::first && starts_text)) &&
                        !(spec_.space_prefix_if_missing && segment.front() == ' ');
    normalized.reserve(segment.size() + 8);
    if (prefix) normalized.append(kSpmSpace);
    for (const char c : segment) {
      if (c == ' ' && spec_.escape_whitespace)
        normalized.append(kSpmSpace);
      else
        normalized.push_back(c);
    }
  } else if (spec_.byte_level_prefix_space && segment.front() != ' ') {
    normalized = " ";
    normalized.append(segment);
  }
  const std::string_view text = normalized.empty() ? segment : std::string_view(normalized);
  const std::vector<TextRange> words = spec_.bert_pre_tokenizer ? bert_pre_tokenize(text) : pre_tokenizer_.split(text);
  for (const TextRange& r : words) {
    const std::string_view word = text.substr(r.begin, r.end - r.begin);
    if (word.size() > kMaxCachedWordBytes) {
      encode_word(word, out);
      continue;
    }
    auto [it, inserted] = cache.try_emplace(std::string(word));
    if (inserted) encode_word(word, it->second);
    out.insert(out.end(), it->second.begin(), it->second.end());
  }
}

void Tokenizer::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (spec_.model == TokenizerModel::wordpiece) {
    // HF looks words up in model.vocab only; token_ids_ also holds the added tokens, which differs only
    // for an added token missing from model.vocab that reaches the model as a word (in BERT files every
    // added token is in the vocabulary, and punctuation splitting keeps "[...]" from being one word).
    wordpiece_encode_word(word, token_ids_, spec_.wordpiece, spec_.unk_id, out);
    return;
  }
  if (spec_.ignore_merges) {
    std::string key;
    if (spec_.model == TokenizerModel::byte_level_bpe) unicode::append_byte_level(key, word);
    if (auto id = find_token(key.empty() ? word : std::string_view(key))) {
      out.push_back(*id);
      return;
    }
  }
  std::vector<int32_t> symbols;
  initial_symbols(word, symbols);
  apply_merges(symbols);
  out.insert(out.end(), symbols.begin(), symbols.end());
}

void Tokenizer::initial_symbols(std::string_view word, std::vector<int32_t>& symbols) const {
  symbols.reserve(word.size());
  if (spec_.model == TokenizerModel::byte_level_bpe) {
    // A byte whose character is missing from the vocabulary becomes unk, or is dropped without one
    // (Hugging Face's BPE does the same).
    for (const char c : word) {
      const int32_t id = byte_token_[static_cast<uint8_t>(c)];
      if (id >= 0)
        symbols.push_back(id);
      else if (spec_.unk_id >= 0)
        symbols.push_back(spec_.unk_id);
    }
    return;
  }
  bool previous_unk = false;
  for (size_t pos = 0; pos < word.size();) {
    size_t len = unicode::valid_sequence_length(word.substr(pos));
    if (len == 0) len = 1;  // unreachable for repaired text; keeps the loop finite regardless
    const std::string_view ch = word.substr(pos, len);
    pos += len;
    if (auto id = find_token(ch)) {
      symbols.push_back(*id);
      previous_unk = false;
      continue;
    }
    if (spec_.byte_fallback &&
        std::all_of(ch.begin(), ch.end(), [&](char c) { return byte_token_[static_cast<uint8_t>(c)] >= 0; })) {
      for (const char c : ch) symbols.push_back(byte_token_[static_cast<uint8_t>(c)]);
      previous_unk = false;
      continue;
    }
    if (spec_.unk_id < 0) continue;
    if (!(spec_.fuse_unk && previous_unk)) symbols.push_back(spec_.unk_id);
    previous_unk = true;
  }
}

void Tokenizer::apply_merges(std::vector<int32_t>& symbols) const {
  const auto n = static_cast<int32_t>(symbols.size());
  if (n < 2 || merges_.empty()) return;
  struct Candidate {
    int32_t rank, pos, left, right;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::vector<int32_t> next(n), prev(n);
  for (int32_t i = 0; i < n; ++i) {
    next[i] = i + 1;  // n marks the end
    prev[i] = i - 1;
  }
  std::vector<Candidate> heap_storage;
  heap_storage.reserve(n);
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue(std::greater<>(),
                                                                               std::move(heap_storage));
  auto consider = [&](int32_t left_pos) {
    if (left_pos < 0 || next[left_pos] >= n) return;
    const int32_t l = symbols[left_pos], r = symbols[next[left_pos]];
    if (auto it = merges_.find(pair_key(l, r)); it != merges_.end()) queue.push({it->second.rank, left_pos, l, r});
  };
  for (int32_t i = 0; i + 1 < n; ++i) consider(i);
  std::vector<uint8_t> alive(n, 1);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    // Entries go stale when a neighbour merged first; the pair must still be there as queued.
    if (!alive[c.pos] || symbols[c.pos] != c.left || next[c.pos] >= n || symbols[next[c.pos]] != c.right) continue;
    const int32_t right_pos = next[c.pos];
    symbols[c.pos] = merges_.at(pair_key(c.left, c.right)).id;
    alive[right_pos] = 0;
    next[c.pos] = next[right_pos];
    if (next[c.pos] < n) prev[next[c.pos]] = c.pos;
    consider(prev[c.pos]);
    consider(c.pos);
  }
  int32_t w = 0;
  for (int32_t i = 0; i < n; ++i)
    if (alive[i]) symbols[w++] = symbols[i];
  symbols.resize(w);
}

void Tokenizer::check_id(int32_t id) const {
  KS_CHECK(id >= 0 && id < vocab_size(), "tokenizer: token id {} is outside the vocabulary (size {})", id,
           vocab_size());
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  StreamDecoder stream(*this, skip_special);
  std::string out;
  for (const int32_t id : ids) out.append(stream.push(id));
  out.append(stream.flush());
  return out;
}

const std::string& Tokenizer::token_text(int32_t id) const {
  check_id(id);
  return spec_.tokens[id];
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  check_id(id);
  return pieces_[id];
}

std::optional<int32_t> Tokenizer::find_token(std::string_view text) const {
  if (auto it = token_ids_.find(text); it != token_ids_.end()) return it->second;
  return std::nullopt;
}

bool Tokenizer::is_eog(int32_t id) const {
  return std::find(eog_ids_.begin(), eog_ids_.end(), id) != eog_ids_.end();
}

bool Tokenizer::is_special(int32_t id) const {
  check_id(id);
  return special_[id] != 0;
}

std::string StreamDecoder::push(int32_t id) {
  tokenizer_->check_id(id);
  if (skip_special_ && tokenizer_->special_[id]) return {};
  const std::string& bytes = tokenizer_->pieces_[id];
  if (tokenizer_->spec_.model == TokenizerModel::wordpiece) {
    const auto& decoder = tokenizer_->spec_.wordpiece_decoder;
    wordpiece_decode_token(bytes, at_start_, decoder ? &*decoder : nullptr, pending_);
    at_start_ = false;
  } else {
    append_bpe_piece(bytes, tokenizer_->is_spm_word_[id]);
  }
  const size_t ready = pending_.size() - unicode::incomplete_tail_length(pending_);
  std::string out = unicode::sanitize_utf8(std::string_view(pending_).substr(0, ready));
  pending_.erase(0, ready);
  return out;
}

void StreamDecoder::append_bpe_piece(const std::string& bytes, bool spm_word) {
  switch (tokenizer_->spec_.decode_space_prefix) {
    case DecodeSpacePrefix::keep: pending_.append(bytes); break;
    case DecodeSpacePrefix::strip_leading_space:
      // The first byte of the whole text, whichever token brings it.
      pending_.append(bytes, at_start_ && !bytes.empty() && bytes.front() == ' ' ? 1 : 0);
      if (!bytes.empty()) at_start_ = false;
      break;
    case DecodeSpacePrefix::strip_first_token_ws:
      if (at_start_ && spm_word) {
        for (const char c : bytes)
          if (c != ' ') pending_.push_back(c);
      } else {
        pending_.append(bytes);
      }
      at_start_ = false;
      break;
  }
}

std::string StreamDecoder::flush() {
  std::string out = unicode::sanitize_utf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace kestrel
