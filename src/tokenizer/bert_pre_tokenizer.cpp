#include "tokenizer/bert_pre_tokenizer.h"

#include <algorithm>

#include "tokenizer/bert_unicode.h"
#include "tokenizer/unicode.h"

namespace kestrel {

std::vector<TextRange> bert_pre_tokenize(std::string_view text) {
  std::vector<TextRange> words;
  size_t word_begin = 0;
  auto close_word = [&](size_t end) {
    if (end > word_begin) words.push_back({word_begin, end});
  };
  for (size_t pos = 0; pos < text.size();) {
    const size_t n = std::max<size_t>(unicode::valid_sequence_length(text.substr(pos)), 1);
    const char32_t c = unicode::decode_code_point(text.substr(pos), n);
    if (unicode::is_white_space(c)) {
      close_word(pos);
      word_begin = pos + n;
    } else if (bert_unicode::is_punctuation(c)) {
      close_word(pos);
      words.push_back({pos, pos + n});
      word_begin = pos + n;
    }
    pos += n;
  }
  close_word(text.size());
  return words;
}

}  // namespace kestrel
