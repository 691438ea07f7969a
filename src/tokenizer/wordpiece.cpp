#include "tokenizer/wordpiece.h"

#include <utility>

namespace kestrel {
namespace {

size_t count_chars(std::string_view s) {
  size_t n = 0;
  for (const char c : s) n += (static_cast<uint8_t>(c) & 0xC0) != 0x80;
  return n;
}

// HF's cleanup of a decoded token, in its order: no space before . ? ! , and English contractions.
void cleanup(std::string& s) {
  static constexpr std::pair<std::string_view, std::string_view> kReplacements[] = {
      {" .", "."},   {" ?", "?"},           {" !", "!"},   {" ,", ","},     {" ' ", "'"},   {" n't", "n't"},
      {" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kReplacements) {
    for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size()))
      s.replace(pos, from.size(), to);
  }
}

}  // namespace

void wordpiece_encode_word(std::string_view word, const std::unordered_map<std::string_view, int32_t>& vocab,
                           const WordPieceOptions& options, int32_t unk_id, std::vector<int32_t>& out) {
  if (count_chars(word) > options.max_input_chars_per_word) {
    out.push_back(unk_id);
    return;
  }
  const size_t first_token = out.size();
  std::string candidate;
  for (size_t start = 0; start < word.size();) {
    // The longest piece starting at `start`, shortening one character at a time.
    size_t end = word.size();
    int32_t found = -1;
    while (end > start) {
      candidate.assign(start > 0 ? options.continuing_subword_prefix : std::string_view());
      candidate.append(word.substr(start, end - start));
      if (auto it = vocab.find(candidate); it != vocab.end()) {
        found = it->second;
        break;
      }
      do --end;  // back to the start of the previous character
      while (end > start && (static_cast<uint8_t>(word[end]) & 0xC0) == 0x80);
    }
    if (found < 0) {
      out.resize(first_token);
      out.push_back(unk_id);
      return;
    }
    out.push_back(found);
    start = end;
  }
}

void wordpiece_decode_token(std::string_view token, bool first, const WordPieceDecoderOptions* options,
                            std::string& out) {
  std::string piece;
  if (options == nullptr) {
    if (!first) out.push_back(' ');
    out.append(token);
    return;
  }
  if (first)
    piece.assign(token);
  else if (token.starts_with(options->prefix))
    piece.assign(token.substr(options->prefix.size()));
  else
    piece.append(" ").append(token);
  if (options->cleanup) cleanup(piece);
  out.append(piece);
}

}  // namespace kestrel
