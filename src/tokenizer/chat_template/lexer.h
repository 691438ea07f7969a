// Splits a template into text and tag tokens the way jinja2's lexer does with Hugging Face's settings
// (trim_blocks, lstrip_blocks, '-'/'+' whitespace control, keep_trailing_newline off), so the text
// tokens already carry exactly the whitespace that jinja2 would emit.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kestrel::chat_template {

enum class TokenKind {
  Text,        // literal template text (whitespace control already applied)
  VarBegin,    // {{
  VarEnd,      // }}
  BlockBegin,  // {%
  BlockEnd,    // %}
  Name,
  String,  // text holds the unescaped value
  Int,
  Float,
  Op,  // punctuation and operators, text holds the spelling
  Eof,
};

struct Token {
  TokenKind kind;
  std::string text;
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1;
  int column = 1;
};

// Throws kestrel::Error with line and column on malformed input (unterminated tags, strings,
// unknown characters).
std::vector<Token> tokenize(std::string_view source);

}  // namespace kestrel::chat_template
