#include "tokenizer/bert_normalizer.h"

#include "tokenizer/bert_unicode.h"
#include "tokenizer/unicode.h"

namespace kestrel {

std::string bert_normalize(std::string_view text, const BertNormalizerOptions& options) {
  std::u32string chars;
  chars.reserve(text.size() + 8);
  for (const char32_t c : unicode::code_points(text)) {
    if (options.clean_text) {
      if (bert_unicode::removed_by_clean_text(c)) continue;
      if (unicode::is_white_space(c)) {
        chars.push_back(U' ');
        continue;
      }
    }
    if (options.handle_chinese_chars && bert_unicode::is_cjk_ideograph(c)) {
      chars.append({U' ', c, U' '});
    } else {
      chars.push_back(c);
    }
  }
  if (options.strip_accents) {
    std::u32string decomposed;
    bert_unicode::append_nfd(decomposed, chars);
    chars.clear();
    for (const char32_t c : decomposed)
      if (!bert_unicode::is_nonspacing_mark(c)) chars.push_back(c);
  }
  if (options.lowercase) {
    std::u32string lower;
    lower.reserve(chars.size());
    for (const char32_t c : chars) bert_unicode::append_lowercase(lower, c);
    chars.swap(lower);
  }
  std::string out;
  out.reserve(chars.size());
  for (const char32_t c : chars) unicode::append_utf8(out, c);
  return out;
}

}  // namespace kestrel
