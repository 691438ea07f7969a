// The WordPiece model and decoder of BERT-family tokenizers, as Hugging Face `tokenizers` runs them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/tokenizer_spec.h"

namespace kestrel {

// Appends the tokens of one pre-tokenized word (valid UTF-8): greedy longest match first, each piece
// after the first looked up with the continuing-subword prefix. A word longer than
// max_input_chars_per_word characters, or with a position where no piece matches, becomes `unk_id` alone.
void wordpiece_encode_word(std::string_view word, const std::unordered_map<std::string_view, int32_t>& vocab,
                           const WordPieceOptions& options, int32_t unk_id, std::vector<int32_t>& out);

// Appends the decoded text of one token: `first` is whether it is the first token decoded. Without
// options (no decoder in tokenizer.json), tokens are joined with single spaces, as HF does.
void wordpiece_decode_token(std::string_view token, bool first, const WordPieceDecoderOptions* options,
                            std::string& out);

}  // namespace kestrel
