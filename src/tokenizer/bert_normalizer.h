// Hugging Face's BertNormalizer, the text clean-up BERT-family tokenizers run before splitting words.
#pragma once

#include <string>
#include <string_view>

#include "tokenizer/tokenizer_spec.h"

namespace kestrel {

// `text` (valid UTF-8) normalized in HF's order: clean_text (drop control characters, NUL and U+FFFD;
// whitespace becomes a space), handle_chinese_chars (a space on each side of a CJK ideograph),
// strip_accents (NFD, then drop nonspacing marks), lowercase.
std::string bert_normalize(std::string_view text, const BertNormalizerOptions& options);

}  // namespace kestrel
