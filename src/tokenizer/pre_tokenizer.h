// Regex pre-tokenization with PCRE2 (UTF mode, Unicode properties, JIT when available). A
// PreTokenizer holds compiled patterns and is immutable after construction, so one instance serves
// many threads; each call allocates its own match data.
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer_spec.h"

namespace kestrel {

// A piece of the input text: [begin, end) byte offsets.
struct TextRange {
  size_t begin = 0;
  size_t end = 0;
};

class PreTokenizer {
 public:
  // Compiles every split's regex; throws kestrel::Error with PCRE2's message for a bad pattern.
  explicit PreTokenizer(const std::vector<PreTokenizerSplit>& splits);
  ~PreTokenizer();
  PreTokenizer(PreTokenizer&&) noexcept;
  PreTokenizer& operator=(PreTokenizer&&) noexcept;

  // Splits `text` (valid UTF-8) into non-empty pieces that cover it in order, except for what a
  // `removed` split drops. With no splits, the whole text is one piece.
  std::vector<TextRange> split(std::string_view text) const;

 private:
  struct Compiled;
  std::vector<std::unique_ptr<Compiled>> steps_;
};

}  // namespace kestrel
