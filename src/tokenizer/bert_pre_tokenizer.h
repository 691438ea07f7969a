// Hugging Face's BertPreTokenizer: words are split at whitespace (which is dropped), and every
// punctuation character (bert_unicode::is_punctuation) is a word of its own.
#pragma once

#include <string_view>
#include <vector>

#include "tokenizer/pre_tokenizer.h"

namespace kestrel {

// The words of `text` (valid UTF-8) as byte ranges, in order.
std::vector<TextRange> bert_pre_tokenize(std::string_view text);

}  // namespace kestrel
