// What an encoder model (BERT family) takes for a batch of texts or text pairs, built the way Hugging
// Face's encode_batch does: each text tokenized without special tokens; truncated as tokenizer.json's
// "truncation" says, leaving room for the special tokens; special tokens and token type ids placed by
// the post-processor's template; then every row padded as "padding" says.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace kestrel {

// One row of a batch; the three vectors have the same length.
struct EncoderInput {
  std::vector<int32_t> ids;
  std::vector<int32_t> type_ids;
  std::vector<int32_t> attention_mask;  // 1 for tokens (special ones included), 0 for padding
};

struct EncoderInputOptions {
  bool add_special = true;  // the template's special tokens ([CLS], [SEP], ...)
  bool truncate = true;     // tokenizer.json's truncation, when it has one
  bool pad = true;          // tokenizer.json's padding, when it has one
  // > 0: texts are cut to this many ids (special tokens included) instead, longest first from the end,
  // as sentence-transformers' max_seq_length overrides tokenizer.json's truncation.
  size_t max_length = 0;
};

// One row per text. Special-token text in the texts ("[MASK]") is read as that token, as HF does.
// Throws kestrel::Error where HF fails: a stride not below the length a text is cut to, a text too short
// for OnlyFirst/OnlySecond, OnlySecond without pairs.
std::vector<EncoderInput> encode_batch(const Tokenizer& tokenizer, std::span<const std::string_view> texts,
                                       const EncoderInputOptions& options = {});

// One row per (first, second) pair, from the template's pair form. Throws kestrel::Error as above, and
// when the tokenizer's post-processor has no pair form.
std::vector<EncoderInput> encode_pair_batch(const Tokenizer& tokenizer,
                                            std::span<const std::pair<std::string_view, std::string_view>> pairs,
                                            const EncoderInputOptions& options = {});

}  // namespace kestrel
