// The character classes of BERT's normalizer and pre-tokenizer, as Hugging Face `tokenizers` draws them.
// HF takes punctuation, nonspacing marks and control/format characters from Unicode 8.0 tables, so these
// follow tables measured on HF (bert_unicode_tables.inc, see scripts/fixtures/tokenizer/
// make_bert_unicode_tables.py) rather than utf8proc's newer categories; lowercasing and NFD use utf8proc
// with the few exceptions measured the same way.
#pragma once

#include <string>

namespace kestrel::bert_unicode {

// Dropped by BertNormalizer's clean_text: NUL, U+FFFD and control, format and private-use characters
// (but not tab, newline and carriage return, which become spaces).
bool removed_by_clean_text(char32_t c);
// Isolated by BertPreTokenizer: ASCII symbols (!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~) and Unicode punctuation.
bool is_punctuation(char32_t c);
// Dropped by strip_accents after NFD.
bool is_nonspacing_mark(char32_t c);
// Surrounded by spaces by handle_chinese_chars: the CJK Unified Ideographs blocks and their extensions
// and the compatibility ideographs (the ranges of BERT's _is_chinese_char). Kana and Hangul are not.
bool is_cjk_ideograph(char32_t c);
// Appends the lowercase of `c` (one code point, or two for U+0130), as Rust's char::to_lowercase.
void append_lowercase(std::u32string& out, char32_t c);
// Appends the canonical decomposition of `text` (NFD: decomposed, combining marks in canonical order).
void append_nfd(std::u32string& out, std::u32string_view text);

}  // namespace kestrel::bert_unicode
