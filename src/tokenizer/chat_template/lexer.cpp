#include "tokenizer/chat_template/lexer.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "core/error.h"
#include "tokenizer/chat_template/py_string.h"

namespace kestrel::chat_template {
namespace {

bool is_ascii_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool is_name_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_name_char(char c) {
  return is_name_start(c) || is_digit(c);
}

// Python's str.rstrip(): drops trailing whitespace code points.
std::string_view rstrip_py(std::string_view s) {
  const std::vector<size_t> offs = py::code_point_offsets(s);
  size_t k = offs.size() - 1;
  while (k > 0) {
    size_t i = offs[k - 1];
    if (!py::is_space(py::next_code_point(s, i))) break;
    --k;
  }
  return s.substr(0, offs[k]);
}

bool all_space(std::string_view s) {
  for (size_t i = 0; i < s.size();)
    if (!py::is_space(py::next_code_point(s, i))) return false;
  return true;
}

class Lexer {
 public:
  explicit Lexer(std::string_view source) {
    // jinja2 normalizes every newline to "\n" and, without keep_trailing_newline, drops one final newline.
    src_.reserve(source.size());
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        src_ += '\n';
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
      } else {
        src_ += source[i];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i)
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
  }

  std::vector<Token> run() {
    size_t pos = 0;
    while (pos < src_.size()) {
      const size_t start = find_tag(pos);
      if (start == std::string::npos) {
        emit_text(src_.substr(pos), pos);
        break;
      }
      const char kind = src_[start + 1];
      const char sign =
          start + 2 < src_.size() && (src_[start + 2] == '-' || src_[start + 2] == '+') ? src_[start + 2] : 0;
      const size_t body = start + 2 + (sign ? 1 : 0);
      const bool raw = kind == '%' && is_raw_begin(body);
      emit_text(apply_left_control(std::string_view(src_).substr(pos, start - pos), pos, sign, kind != '{'), pos);
      if (kind == '#') {
        pos = lex_comment(start, body);
      } else if (raw) {
        pos = lex_raw(start, body);
      } else {
        pos = lex_tag(start, body, kind == '{');
      }
    }
    tokens_.push_back(make(TokenKind::Eof, "", src_.size()));
    return std::move(tokens_);
  }

 private:
  std::string src_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;

  Token make(TokenKind kind, std::string text, size_t offset) const {
    Token t;
    t.kind = kind;
    t.text = std::move(text);
    const auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
    t.line = static_cast<int>(it - line_starts_.begin());
    t.column = static_cast<int>(offset - *(it - 1)) + 1;
    return t;
  }

  [[noreturn]] void fail(size_t offset, std::string_view what) const {
    const Token t = make(TokenKind::Eof, "", offset);
    KS_FAIL("chat template syntax error at line {}, column {}: {}", t.line, t.column, what);
  }

  size_t find_tag(size_t pos) const {
    for (size_t i = src_.find('{', pos); i != std::string::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    }
    return std::string::npos;
  }

  // '{%' sign? space* 'raw' space* ('-%}' | '%}')
  bool is_raw_begin(size_t body) const {
    size_t i = body;
    while (i < src_.size() && is_ascii_space(src_[i])) ++i;
    if (src_.compare(i, 3, "raw") != 0) return false;
    i += 3;
    while (i < src_.size() && is_ascii_space(src_[i])) ++i;
    return src_.compare(i, 2, "%}") == 0 || src_.compare(i, 3, "-%}") == 0;
  }

  // Whitespace control on the text before a tag: '-' strips all trailing whitespace; otherwise
  // lstrip_blocks removes the indentation of a block or comment tag that starts its line.
  std::string_view apply_left_control(std::string_view text, size_t text_pos, char sign, bool block_like) const {
    if (sign == '-') return rstrip_py(text);
    if (sign == '+' || !block_like) return text;
    const size_t nl = text.rfind('\n');
    const size_t l_pos = nl == std::string_view::npos ? 0 : nl + 1;
    const bool line_starting = text_pos == 0 || src_[text_pos - 1] == '\n';
    if ((l_pos > 0 || line_starting) && all_space(text.substr(l_pos))) return text.substr(0, l_pos);
    return text;
  }

  void emit_text(std::string_view text, size_t offset) {
    if (!text.empty()) tokens_.push_back(make(TokenKind::Text, std::string(text), offset));
  }

  // After a block or comment end: '-' eats all whitespace, trim_blocks eats one newline, '+' nothing.
  size_t after_end(size_t end_pos, char end_sign, bool trim_newline) const {
    size_t p = end_pos;
    if (end_sign == '-') {
      while (p < src_.size()) {
        size_t q = p;
        if (!py::is_space(py::next_code_point(src_, q))) break;
        p = q;
      }
    } else if (end_sign != '+' && trim_newline && p < src_.size() && src_[p] == '\n') {
      ++p;
    }
    return p;
  }

  size_t lex_comment(size_t start, size_t body) {
    const size_t e = src_.find("#}", body);
    if (e == std::string::npos) fail(start, "missing end of comment tag");
    const char end_sign = e > body && (src_[e - 1] == '-' || src_[e - 1] == '+') ? src_[e - 1] : 0;
    return after_end(e + 2, end_sign, true);
  }

  size_t lex_raw(size_t start, size_t body) {
    // Skip "raw" and the end of the opening tag.
    size_t p = src_.find("%}", body);
    const bool strip_after = src_[p - 1] == '-';
    p += 2;
    if (strip_after) p = after_end(p, '-', false);
    for (size_t i = src_.find("{%", p); i != std::string::npos; i = src_.find("{%", i + 2)) {
      const char sign = i + 2 < src_.size() && (src_[i + 2] == '-' || src_[i + 2] == '+') ? src_[i + 2] : 0;
      size_t q = i + 2 + (sign ? 1 : 0);
      while (q < src_.size() && is_ascii_space(src_[q])) ++q;
      if (src_.compare(q, 6, "endraw") != 0) continue;
      q += 6;
      while (q < src_.size() && is_ascii_space(src_[q])) ++q;
      char end_sign = 0;
      if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) end_sign = src_[q++];
      if (src_.compare(q, 2, "%}") != 0) continue;
      emit_text(apply_left_control(std::string_view(src_).substr(p, i - p), p, sign, true), p);
      return after_end(q + 2, end_sign, true);
    }
    fail(start, "missing end of raw directive");
  }

  size_t lex_tag(size_t start, size_t body, bool is_var) {
    tokens_.push_back(make(is_var ? TokenKind::VarBegin : TokenKind::BlockBegin, "", start));
    size_t p = body;
    int depth = 0;
    while (true) {
      if (p >= src_.size())
        fail(start, is_var ? "unexpected end of template, expected '}}'" : "unexpected end of template, expected '%}'");
      if (depth == 0) {
        if (is_var) {
          if (src_.compare(p, 3, "-}}") == 0) {
            tokens_.push_back(make(TokenKind::VarEnd, "", p));
            return after_end(p + 3, '-', false);
          }
          if (src_.compare(p, 2, "}}") == 0) {
            tokens_.push_back(make(TokenKind::VarEnd, "", p));
            return p + 2;
          }
        } else {
          char end_sign = 0;
          if ((src_[p] == '-' || src_[p] == '+') && src_.compare(p + 1, 2, "%}") == 0) end_sign = src_[p];
          if (end_sign || src_.compare(p, 2, "%}") == 0) {
            tokens_.push_back(make(TokenKind::BlockEnd, "", p));
            return after_end(p + 2 + (end_sign ? 1 : 0), end_sign, true);
          }
        }
      }
      const char c = src_[p];
      if (is_ascii_space(c)) {
        ++p;
      } else if (is_name_start(c)) {
        size_t q = p;
        while (q < src_.size() && is_name_char(src_[q])) ++q;
        tokens_.push_back(make(TokenKind::Name, src_.substr(p, q - p), p));
        p = q;
      } else if (is_digit(c)) {
        p = lex_number(p);
      } else if (c == '\'' || c == '"') {
        p = lex_string(p);
      } else {
        p = lex_operator(p, depth);
      }
    }
  }

  size_t lex_number(size_t p) {
    size_t q = p;
    auto digits = [&] {
      const size_t b = q;
      while (q < src_.size() &&
             (is_digit(src_[q]) || (src_[q] == '_' && q > b && q + 1 < src_.size() && is_digit(src_[q + 1]))))
        ++q;
      return q > b;
    };
    digits();
    bool is_float = false;
    if (q + 1 < src_.size() && src_[q] == '.' && is_digit(src_[q + 1])) {
      ++q;
      digits();
      is_float = true;
    }
    if (q < src_.size() && (src_[q] == 'e' || src_[q] == 'E')) {
      size_t save = q++;
      if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) ++q;
      if (digits()) {
        is_float = true;
      } else {
        q = save;
      }
    }
    std::string text;
    for (size_t i = p; i < q; ++i)
      if (src_[i] != '_') text += src_[i];
    Token t = make(is_float ? TokenKind::Float : TokenKind::Int, text, p);
    if (is_float) {
      t.float_value = std::strtod(text.c_str(), nullptr);
    } else {
      errno = 0;
      t.int_value = std::strtoll(text.c_str(), nullptr, 10);
      if (errno == ERANGE) fail(p, "integer literal out of range");
    }
    tokens_.push_back(std::move(t));
    return q;
  }

  // String literals unescape like Python's "unicode-escape" codec (jinja2 does exactly that).
  size_t lex_string(size_t p) {
    const char quote = src_[p];
    std::string value;
    size_t q = p + 1;
    while (true) {
      if (q >= src_.size()) fail(p, "unterminated string literal");
      const char c = src_[q];
      if (c == quote) break;
      if (c != '\\') {
        value += c;
        ++q;
        continue;
      }
      if (q + 1 >= src_.size()) fail(p, "unterminated string literal");
      const char e = src_[q + 1];
      q += 2;
      switch (e) {
        case '\n': break;
        case '\\': value += '\\'; break;
        case '\'': value += '\''; break;
        case '"': value += '"'; break;
        case 'a': value += '\a'; break;
        case 'b': value += '\b'; break;
        case 'f': value += '\f'; break;
        case 'n': value += '\n'; break;
        case 'r': value += '\r'; break;
        case 't': value += '\t'; break;
        case 'v': value += '\v'; break;
        case 'x': py::append_utf8(value, hex_escape(q, 2, p)); break;
        case 'u': py::append_utf8(value, hex_escape(q, 4, p)); break;
        case 'U': {
          const uint32_t cp = hex_escape(q, 8, p);
          if (cp > 0x10FFFF) fail(p, "illegal Unicode character in string literal");
          py::append_utf8(value, cp);
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = e - '0';
            for (int k = 0; k < 2 && q < src_.size() && src_[q] >= '0' && src_[q] <= '7'; ++k)
              cp = cp * 8 + (src_[q++] - '0');
            py::append_utf8(value, cp);
          } else {
            value += '\\';
            value += e;
          }
      }
    }
    tokens_.push_back(make(TokenKind::String, std::move(value), p));
    return q + 1;
  }

  uint32_t hex_escape(size_t& q, int n, size_t string_start) {
    uint32_t cp = 0;
    for (int k = 0; k < n; ++k, ++q) {
      if (q >= src_.size()) fail(string_start, "truncated \\x/\\u escape in string literal");
      const char h = src_[q];
      int d;
      if (h >= '0' && h <= '9')
        d = h - '0';
      else if (h >= 'a' && h <= 'f')
        d = h - 'a' + 10;
      else if (h >= 'A' && h <= 'F')
        d = h - 'A' + 10;
      else
        fail(string_start, "truncated \\x/\\u escape in string literal");
      cp = cp * 16 + static_cast<uint32_t>(d);
    }
    return cp;
  }

  size_t lex_operator(size_t p, int& depth) {
    static constexpr std::string_view two[] = {"//", "**", "==", "!=", "<=", ">="};
    for (std::string_view op : two) {
      if (src_.compare(p, 2, op) == 0) {
        tokens_.push_back(make(TokenKind::Op, std::string(op), p));
        return p + 2;
      }
    }
    const char c = src_[p];
    static constexpr std::string_view one = "+-/*%~[](){}<>=.:|,;";
    if (one.find(c) == std::string_view::npos) fail(p, fmt::format("unexpected char '{}'", c));
    if (c == '(' || c == '[' || c == '{') ++depth;
    if (c == ')' || c == ']' || c == '}') {
      if (depth == 0) fail(p, fmt::format("unexpected '{}'", c));
      --depth;
    }
    tokens_.push_back(make(TokenKind::Op, std::string(1, c), p));
    return p + 1;
  }
};

}  // namespace

std::vector<Token> tokenize(std::string_view source) {
  return Lexer(source).run();
}

}  // namespace kestrel::chat_template
