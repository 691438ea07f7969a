// Regex -> GBNF in two steps: a recursive-descent parser builds a small syntax tree (sets of code points,
// sequences, alternations, repetitions, anchors), then an emitter prints it as GBNF. Character sets are
// resolved to sorted code-point ranges at parse time (negation, shorthands and the json_string exclusions
// are set arithmetic there), so the emitter only has to choose how to print a set.
#include "structured/regex.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/utf8.h"

namespace kestrel::structured {
namespace {

constexpr uint32_t kMaxCodePoint = 0x10FFFF;
constexpr uint32_t kSurrogateLo = 0xD800;
constexpr uint32_t kSurrogateHi = 0xDFFF;
constexpr uint32_t kInf = std::numeric_limits<uint32_t>::max();
// A bound above this is almost certainly a mistake, and the grammar compiler expands bounded repetition
// into that many copies.
constexpr uint32_t kMaxBound = 10000;
// Nesting depth of groups; the parser and emitter recurse once per level.
constexpr int kMaxDepth = 256;

struct Range {
  uint32_t lo, hi;  // inclusive
};

// A set of code points: sorted, disjoint, non-adjacent ranges within the Unicode scalar values (never a
// surrogate: no UTF-8 text contains one, and the grammar works on UTF-8 bytes).
using CharSet = std::vector<Range>;

CharSet normalized(CharSet s) {
  std::sort(s.begin(), s.end(), [](const Range& a, const Range& b) { return a.lo < b.lo; });
  CharSet merged;
  for (const Range& r : s) {
    if (!merged.empty() && r.lo <= merged.back().hi + 1) {
      merged.back().hi = std::max(merged.back().hi, r.hi);
    } else {
      merged.push_back(r);
    }
  }
  CharSet out;
  for (const Range& r : merged) {  // cut out the surrogates
    if (r.hi < kSurrogateLo || r.lo > kSurrogateHi) {
      out.push_back(r);
      continue;
    }
    if (r.lo < kSurrogateLo) out.push_back({r.lo, kSurrogateLo - 1});
    if (r.hi > kSurrogateHi) out.push_back({kSurrogateHi + 1, r.hi});
  }
  return out;
}

CharSet complement(const CharSet& s) {  // `s` normalized
  CharSet out;
  uint32_t next = 0;
  for (const Range& r : s) {
    if (r.lo > next) out.push_back({next, r.lo - 1});
    next = r.hi + 1;
  }
  if (next <= kMaxCodePoint) out.push_back({next, kMaxCodePoint});
  return normalized(std::move(out));
}

CharSet minus(const CharSet& a, const CharSet& b) {  // both normalized
  CharSet nb = complement(b), out;
  size_t i = 0, j = 0;
  while (i < a.size() && j < nb.size()) {
    uint32_t lo = std::max(a[i].lo, nb[j].lo), hi = std::min(a[i].hi, nb[j].hi);
    if (lo <= hi) out.push_back({lo, hi});
    (a[i].hi < nb[j].hi) ? ++i : ++j;
  }
  return out;
}

bool contains(const CharSet& s, uint32_t cp) {
  return std::any_of(s.begin(), s.end(), [cp](const Range& r) { return r.lo <= cp && cp <= r.hi; });
}

// What JSON requires to be escaped inside a string: `"`, `\` and U+0000..U+001F.
const CharSet& json_escaped() {
  static const CharSet s = {{0x00, 0x1F}, {'"', '"'}, {'\\', '\\'}};
  return s;
}

bool json_escaped(uint32_t cp) {
  return cp < 0x20 || cp == '"' || cp == '\\';
}

// The shorthands, in their ASCII meaning (as Python's re.ASCII and JavaScript without the `u` flag for
// \d \w; \s deliberately without the Unicode spaces so that every engine agrees).
CharSet shorthand(uint32_t letter, bool json_string) {
  CharSet s;
  switch (letter | 0x20) {
    case 'd': s = {{'0', '9'}}; break;
    case 'w': s = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}}; break;
    // Inside a JSON string \t \n \r \f \v would have to be written escaped, so \s is only the space.
    default: s = json_string ? CharSet{{' ', ' '}} : CharSet{{'\t', '\r'}, {' ', ' '}}; break;
  }
  return (letter >= 'A' && letter <= 'Z') ? complement(s) : s;
}

struct Node {
  enum Kind : uint8_t {
    Empty,   // matches only ""
    Void,    // matches nothing (only made by without_empty())
    Chars,   // one code point of `set`
    Seq,     // kids one after another
    Alt,     // one of the kids
    Repeat,  // kids[0] between min and max times
    Anchor,  // ^ or $: zero width, only valid at the very start or end
  };
  Kind kind = Empty;
  CharSet set;
  std::vector<Node> kids;
  uint32_t min = 0, max = 0;  // Repeat; max == kInf: unbounded
  bool end_anchor = false;    // Anchor: $ rather than ^
  size_t pos = 0;             // byte offset in the regex, for messages
};

Node make(Node::Kind kind, size_t pos) {
  Node n;
  n.kind = kind;
  n.pos = pos;
  return n;
}

bool zero_width(const Node& n) {
  if (n.kind == Node::Anchor || n.kind == Node::Empty) return true;
  if (n.kind != Node::Seq) return false;
  return std::all_of(n.kids.begin(), n.kids.end(), zero_width);
}

class Parser {
 public:
  Parser(std::string_view re, const RegexOptions& opt) : re_(re), opt_(opt) { decode(); }

  Node parse() {
    Node n = parse_alt();
    if (i_ < cps_.size()) fail(i_, "unbalanced parenthesis: ')' without a matching '('");
    check_anchors(n, true, true);
    return n;
  }

 private:
  std::string_view re_;
  const RegexOptions& opt_;
  std::vector<uint32_t> cps_;  // the regex's code points
  std::vector<size_t> offs_;   // byte offset of each, plus the end
  size_t i_ = 0;               // into cps_
  int depth_ = 0;

  // Regex text as written from code point `from` to `to`, for messages.
  std::string snippet(size_t from, size_t to) const {
    to = std::min(to, cps_.size());
    return std::string(re_.substr(offs_[from], offs_[to] - offs_[from]));
  }

  [[noreturn]] void fail(size_t at, std::string_view what) const {
    // The pattern is quoted for context, cut (at a character boundary) when long.
    constexpr size_t kQuote = 60;
    std::string quoted = cps_.size() <= kQuote ? std::string(re_) : snippet(0, kQuote) + "...";
    KS_FAIL("regex: {} at position {} of \"{}\"", what, offs_[std::min(at, cps_.size())], quoted);
  }

  [[noreturn]] void unsupported(size_t from, size_t to, std::string_view what) const {
    KS_FAIL("regex: {} ('{}' at position {}) are not supported", what, snippet(from, to), offs_[from]);
  }

  void decode() {
    size_t p = 0;
    while (p < re_.size()) {
      const size_t at = p;
      const std::optional<uint32_t> cp = next_utf8(re_, p);
      KS_CHECK(cp, "regex: invalid UTF-8 at byte {} of the pattern", at);
      cps_.push_back(*cp);
      offs_.push_back(at);
    }
    offs_.push_back(re_.size());
  }

  bool at(size_t k, uint32_t c) const { return k < cps_.size() && cps_[k] == c; }
  bool more() const { return i_ < cps_.size(); }

  Node parse_alt() {
    size_t start = i_;
    Node alt = make(Node::Alt, offs_[start]);
    alt.kids.push_back(parse_seq());
    while (at(i_, '|')) {
      ++i_;
      alt.kids.push_back(parse_seq());
    }
    if (alt.kids.size() == 1) return std::move(alt.kids[0]);
    return alt;
  }

  Node parse_seq() {
    Node seq = make(Node::Seq, offs_[i_]);
    while (more() && cps_[i_] != '|' && cps_[i_] != ')') {
      size_t start = i_;
      Node atom = parse_atom();
      if (parse_quantifiers(atom, start)) {
        seq.kids.push_back(std::move(atom));
      } else if (atom.kind == Node::Seq) {  // an unquantified group without |: splice it in
        for (Node& k : atom.kids) seq.kids.push_back(std::move(k));
      } else {
        seq.kids.push_back(std::move(atom));
      }
    }
    return seq;
  }

  // A single code point written literally (outside a class, or alone inside a positive class).
  Node literal(uint32_t cp, size_t start) {
    if (opt_.json_string && json_escaped(cp)) {
      KS_FAIL(
          "regex: the pattern needs '{}' (position {}), a character that must be escaped inside a JSON "
          "string; such patterns are not supported",
          snippet(start, i_), offs_[start]);
    }
    Node n = make(Node::Chars, offs_[start]);
    n.set = {{cp, cp}};
    return n;
  }

  // A set from ., a class or a shorthand: in a JSON string it loses what would need escaping.
  Node set_node(CharSet set, size_t start) {
    if (opt_.json_string) set = minus(set, json_escaped());
    if (set.empty()) fail(start, fmt::format("'{}' matches no character", snippet(start, i_)));
    Node n = make(Node::Chars, offs_[start]);
    n.set = std::move(set);
    return n;
  }

  Node parse_atom() {
    size_t start = i_;
    uint32_t c = cps_[i_++];
    switch (c) {
      case '(': return parse_group(start);
      case '[': return parse_class(start);
      case '.': return set_node(complement({{'\n', '\n'}}), start);
      case '^':
      case '$': {
        Node n = make(Node::Anchor, offs_[start]);
        n.end_anchor = c == '$';
        return n;
      }
      case '*':
      case '+':
      case '?': fail(start, fmt::format("quantifier '{}' has nothing to repeat", static_cast<char>(c)));
      case '{':
        if (brace_quantifier(start)) fail(start, "quantifier '{' has nothing to repeat");
        return literal(c, start);  // not a quantifier: a literal '{', as Python and JavaScript read it
      case '\\': {
        if (!more()) fail(start, "pattern ends with a lone '\\'");
        uint32_t e = cps_[i_];
        if (e == 'A' || e == 'z' || e == 'Z') {  // absolute start / end: like ^ and $ under full match
          ++i_;
          Node n = make(Node::Anchor, offs_[start]);
          n.end_anchor = e != 'A';
          return n;
        }
        Escape esc = parse_escape(start, /*in_class=*/false);
        if (esc.is_set) return set_node(std::move(esc.set), start);
        return literal(esc.cp, start);
      }
      default: return literal(c, start);
    }
  }

  // Reads the quantifiers after an atom into a Repeat around it; false when there are none.
  bool parse_quantifiers(Node& atom, size_t atom_start) {
    size_t qstart = i_;
    std::optional<std::pair<uint32_t, uint32_t>> q = read_quantifier();
    if (!q) return false;
    if (atom.kind == Node::Anchor) {
      fail(qstart, fmt::format("quantifier after the anchor '{}'", snippet(atom_start, qstart)));
    }
    // Lazy (*?) and possessive (*+) forms: lazy matches the same strings under full match; possessive
    // is read as greedy (see regex.h).
    if (at(i_, '?') || at(i_, '+')) ++i_;
    size_t again = i_;
    if (read_quantifier()) fail(again, "a quantifier follows another quantifier (multiple repeat)");
    Node rep = make(Node::Repeat, offs_[atom_start]);
    rep.min = q->first;
    rep.max = q->second;
    rep.kids.push_back(std::move(atom));
    atom = std::move(rep);
    return true;
  }

  std::optional<std::pair<uint32_t, uint32_t>> read_quantifier() {
    if (!more()) return std::nullopt;
    switch (cps_[i_]) {
      case '*': ++i_; return std::pair{0u, kInf};
      case '+': ++i_; return std::pair{1u, kInf};
      case '?': ++i_; return std::pair{0u, 1u};
      case '{': {
        size_t start = i_;
        auto q = brace_quantifier(start);
        if (q) i_ = q->end;
        if (q) return std::pair{q->min, q->max};
        return std::nullopt;
      }
      default: return std::nullopt;
    }
  }

  struct Brace {
    uint32_t min, max;
    size_t end;  // index after '}'
  };

  // {m} {m,} {m,n} {,n} at `k` (the '{'); anything else is not a quantifier (then '{' is a literal).
  std::optional<Brace> brace_quantifier(size_t k) {
    size_t p = k + 1;
    auto number = [&](std::optional<uint32_t>& v) {
      uint64_t x = 0;
      size_t first = p;
      while (p < cps_.size() && cps_[p] >= '0' && cps_[p] <= '9') {
        x = std::min<uint64_t>(x * 10 + (cps_[p] - '0'), uint64_t{1} << 40);
        ++p;
      }
      if (p == first) return;
      if (x > kMaxBound) {
        fail(first, fmt::format("repetition bound {} exceeds the limit of {}", snippet(first, p), kMaxBound));
      }
      v = static_cast<uint32_t>(x);
    };
    std::optional<uint32_t> lo, hi;
    number(lo);
    bool comma = at(p, ',');
    if (comma) {
      ++p;
      number(hi);
    }
    if (!at(p, '}') || (!lo && !hi)) return std::nullopt;
    Brace b{lo.value_or(0), comma ? hi.value_or(kInf) : *lo, p + 1};
    if (b.min > b.max) fail(k, fmt::format("bad repetition bounds '{}' (min > max)", snippet(k, p + 1)));
    return b;
  }

  Node parse_group(size_t start) {
    if (++depth_ > kMaxDepth) fail(start, fmt::format("groups nested deeper than {}", kMaxDepth));
    if (at(i_, '?')) {
      size_t q = i_ + 1;
      uint32_t c = q < cps_.size() ? cps_[q] : 0;
      auto name_then = [&](size_t k, uint32_t close) {
        size_t first = k;
        auto ident = [&](uint32_t x, bool lead) {
          return (x >= 'a' && x <= 'z') || (x >= 'A' && x <= 'Z') || x == '_' || (!lead && x >= '0' && x <= '9');
        };
        while (k < cps_.size() && ident(cps_[k], k == first)) ++k;
        if (k == first || !at(k, close)) fail(start, "bad group name");
        return k + 1;
      };
      if (c == ':') {
        i_ = q + 1;
      } else if (c == '=' || c == '!') {
        unsupported(start, q + 1, "look-ahead assertions");
      } else if (c == '<' && (at(q + 1, '=') || at(q + 1, '!'))) {
        unsupported(start, q + 2, "look-behind assertions");
      } else if (c == '<') {
        i_ = name_then(q + 1, '>');
      } else if (c == '\'') {
        i_ = name_then(q + 1, '\'');
      } else if (c == 'P' && at(q + 1, '<')) {
        i_ = name_then(q + 2, '>');
      } else if (c == 'P' && at(q + 1, '=')) {
        unsupported(start, q + 2, "back-references");
      } else if (c == 'P' && at(q + 1, '>')) {
        unsupported(start, q + 2, "recursive patterns");
      } else if (c == '>') {
        unsupported(start, q + 1, "atomic groups");
      } else if (c == '#') {  // a comment: (?# ... )
        size_t k = q + 1;
        while (k < cps_.size() && cps_[k] != ')') ++k;
        if (k == cps_.size()) fail(start, "'(?#' comment is never closed");
        i_ = k + 1;
        --depth_;
        return make(Node::Empty, offs_[start]);
      } else if (c == '|') {
        unsupported(start, q + 1, "branch-reset groups");
      } else if (c == '(') {
        unsupported(start, q + 1, "conditional groups");
      } else if (c == 'R' || c == '&' || c == '+' || (c >= '0' && c <= '9') ||
                 (c == '-' && q + 1 < cps_.size() && cps_[q + 1] >= '0' && cps_[q + 1] <= '9')) {
        unsupported(start, q + 1, "recursive patterns");
      } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '^') {
        unsupported(start, q + 1, "inline flags");
      } else {
        unsupported(start, q + 1, "group syntaxes like this");
      }
    }
    Node inner = parse_alt();
    if (!at(i_, ')')) fail(start, "unbalanced parenthesis: '(' is never closed");
    ++i_;
    --depth_;
    return inner;
  }

  struct Escape {
    bool is_set = false;
    uint32_t cp = 0;
    CharSet set;
  };

  uint32_t hex_digits(size_t start, size_t count) {
    uint32_t v = 0;
    for (size_t k = 0; k < count; ++k, ++i_) {
      int d = more() ? hex_value(cps_[i_]) : -1;
      if (d < 0) fail(start, fmt::format("'\\{}' needs {} hex digits", snippet(start + 1, start + 2), count));
      v = v * 16 + d;
    }
    return v;
  }

  static int hex_value(uint32_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  // \x{...} \u{...}: one or more hex digits in braces; i_ is at the '{'.
  uint32_t braced_hex(size_t start) {
    ++i_;
    uint64_t v = 0;
    size_t first = i_;
    while (more() && hex_value(cps_[i_]) >= 0) v = std::min<uint64_t>(v * 16 + hex_value(cps_[i_++]), 1u << 30);
    if (i_ == first || !at(i_, '}')) fail(start, "bad braced hex escape");
    ++i_;
    return static_cast<uint32_t>(v);
  }

  uint32_t checked_code_point(uint64_t v, size_t start) {
    if (v > kMaxCodePoint) fail(start, fmt::format("'{}' is beyond U+10FFFF", snippet(start, i_)));
    if (v >= kSurrogateLo && v <= kSurrogateHi) {
      fail(start, fmt::format("'{}' is a lone UTF-16 surrogate", snippet(start, i_)));
    }
    return static_cast<uint32_t>(v);
  }

  // i_ is just after the backslash at `start`.
  Escape parse_escape(size_t start, bool in_class) {
    uint32_t c = cps_[i_++];
    Escape e;
    auto ch = [&](uint32_t cp) {
      e.cp = cp;
      return e;
    };
    switch (c) {
      case 'n': return ch('\n');
      case 't': return ch('\t');
      case 'r': return ch('\r');
      case 'f': return ch('\f');
      case 'v': return ch('\v');
      case 'a': return ch('\a');
      case '0': {  // \0 and, as in Python, up to two more octal digits
        uint32_t v = 0;
        for (int k = 0; k < 2 && more() && cps_[i_] >= '0' && cps_[i_] <= '7'; ++k) v = v * 8 + (cps_[i_++] - '0');
        return ch(v);
      }
      case 'x':
        if (at(i_, '{')) return ch(checked_code_point(braced_hex(start), start));
        return ch(hex_digits(start, 2));
      case 'u': {
        if (at(i_, '{')) return ch(checked_code_point(braced_hex(start), start));
        uint32_t v = hex_digits(start, 4);
        // JavaScript writes astral characters as a surrogate pair: \uD83D\uDE00 is one code point.
        if (v >= 0xD800 && v <= 0xDBFF && at(i_, '\\') && at(i_ + 1, 'u')) {
          size_t save = i_;
          i_ += 2;
          uint32_t low = hex_digits(start, 4);
          if (low >= 0xDC00 && low <= 0xDFFF) return ch(0x10000 + ((v - 0xD800) << 10) + (low - 0xDC00));
          i_ = save;
        }
        return ch(checked_code_point(v, start));
      }
      case 'U': return ch(checked_code_point(hex_digits(start, 8), start));
      case 'c': {  // \cX: control-X
        uint32_t x = more() ? cps_[i_] : 0;
        if (!((x >= 'a' && x <= 'z') || (x >= 'A' && x <= 'Z'))) fail(start, "'\\c' needs a letter after it");
        ++i_;
        return ch(x & 0x1F);
      }
      case 'd':
      case 'D':
      case 'w':
      case 'W':
      case 's':
      case 'S':
        e.is_set = true;
        e.set = shorthand(c, opt_.json_string);
        return e;
      case 'b':
        if (in_class) return ch('\b');  // backspace inside a class, as in Python and JavaScript
        unsupported(start, i_, "word boundaries");
      case 'B': unsupported(start, i_, "word boundaries");
      case 'A':
      case 'z':
      case 'Z':
      case 'G': unsupported(start, i_, "anchors inside a character class or mid-pattern");
      case 'p':
      case 'P': unsupported(start, i_, "Unicode property escapes");
      case 'k':
      case 'g': unsupported(start, i_, "back-references");
      default: break;
    }
    if (c >= '1' && c <= '9') unsupported(start, i_, "back-references");
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
      unsupported(start, i_, "escapes like this");
    }
    return ch(c);  // an escaped metacharacter or other symbol stands for itself
  }

  Node parse_class(size_t start) {
    bool negated = at(i_, '^');
    if (negated) ++i_;
    CharSet set;
    bool first = true;
    for (;;) {
      if (!more()) fail(start, "character class '[' is never closed");
      if (cps_[i_] == ']' && !first) {
        ++i_;
        break;
      }
      first = false;
      size_t item = i_;
      Escape a = class_atom(start);
      bool range = at(i_, '-') && i_ + 1 < cps_.size() && cps_[i_ + 1] != ']';
      if (range) {
        ++i_;
        size_t hi_start = i_;
        Escape b = class_atom(start);
        if (a.is_set || b.is_set) fail(item, fmt::format("bad character range '{}'", snippet(item, i_)));
        if (a.cp > b.cp) fail(item, fmt::format("bad character range '{}' (out of order)", snippet(item, i_)));
        (void)hi_start;
        set.push_back({a.cp, b.cp});
      } else if (a.is_set) {
        set.insert(set.end(), a.set.begin(), a.set.end());
      } else {
        if (!negated && opt_.json_string && json_escaped(a.cp)) literal(a.cp, item);  // throws
        set.push_back({a.cp, a.cp});
      }
    }
    set = normalized(std::move(set));
    return set_node(negated ? complement(set) : set, start);
  }

  Escape class_atom(size_t class_start) {
    if (!more()) fail(class_start, "character class '[' is never closed");
    size_t start = i_;
    uint32_t c = cps_[i_++];
    if (c == '\\') {
      if (!more()) fail(start, "pattern ends with a lone '\\'");
      return parse_escape(start, /*in_class=*/true);
    }
    // POSIX classes and collating elements ([:alpha:] [=a=] [.a.]) mean different things in different
    // engines (a literal '[' in Python and JavaScript), so refuse rather than guess.
    if (c == '[' && more() && (cps_[i_] == ':' || cps_[i_] == '=' || cps_[i_] == '.')) {
      unsupported(start, i_ + 1, "POSIX character classes");
    }
    Escape e;
    e.cp = c;
    return e;
  }

  void check_anchors(const Node& n, bool at_start, bool at_end) const {
    switch (n.kind) {
      case Node::Anchor:
        if (n.end_anchor ? !at_end : !at_start) {
          KS_FAIL(
              "regex: an anchor in the middle of the pattern (position {}) is not supported; the whole text "
              "always has to match, so ^ and $ may only stand at its start and end",
              n.pos);
        }
        break;
      case Node::Seq:
        for (size_t k = 0; k < n.kids.size(); ++k) {
          bool before = std::all_of(n.kids.begin(), n.kids.begin() + k, zero_width);
          bool after = std::all_of(n.kids.begin() + k + 1, n.kids.end(), zero_width);
          check_anchors(n.kids[k], at_start && before, at_end && after);
        }
        break;
      case Node::Alt:
        for (const Node& k : n.kids) check_anchors(k, at_start, at_end);
        break;
      case Node::Repeat: check_anchors(n.kids[0], false, false); break;
      default: break;
    }
  }
};

bool nullable(const Node& n) {
  switch (n.kind) {
    case Node::Empty:
    case Node::Anchor: return true;
    case Node::Void:
    case Node::Chars: return false;
    case Node::Seq: return std::all_of(n.kids.begin(), n.kids.end(), nullable);
    case Node::Alt: return std::any_of(n.kids.begin(), n.kids.end(), nullable);
    case Node::Repeat: return n.min == 0 || nullable(n.kids[0]);
  }
  return false;
}

// The same language without the empty string. Unbounded repetition of something that can match empty
// ((a?)*, (a|)+) would otherwise become a rule that reaches itself without consuming anything, which the
// grammar compiler rightly refuses as left recursion; X* equals (X without "")*.
Node without_empty(const Node& n) {
  switch (n.kind) {
    case Node::Empty:
    case Node::Anchor:
    case Node::Void: return make(Node::Void, n.pos);
    case Node::Chars: return n;
    case Node::Seq: {
      if (!nullable(n)) return n;
      // Every kid can be empty: a non-empty text starts with the first kid that is not empty.
      Node alt = make(Node::Alt, n.pos);
      for (size_t k = 0; k < n.kids.size(); ++k) {
        Node head = without_empty(n.kids[k]);
        if (head.kind == Node::Void) continue;
        Node seq = make(Node::Seq, n.pos);
        seq.kids.push_back(std::move(head));
        seq.kids.insert(seq.kids.end(), n.kids.begin() + k + 1, n.kids.end());
        alt.kids.push_back(std::move(seq));
      }
      return alt.kids.empty() ? make(Node::Void, n.pos) : alt;
    }
    case Node::Alt: {
      Node alt = make(Node::Alt, n.pos);
      for (const Node& k : n.kids) {
        Node x = without_empty(k);
        if (x.kind != Node::Void) alt.kids.push_back(std::move(x));
      }
      return alt.kids.empty() ? make(Node::Void, n.pos) : alt;
    }
    case Node::Repeat: {
      if (n.max == 0) return make(Node::Void, n.pos);
      // Empty repetitions can pad any count of non-empty ones up to min.
      bool kid_nullable = nullable(n.kids[0]);
      Node kid = kid_nullable ? without_empty(n.kids[0]) : n.kids[0];
      if (kid.kind == Node::Void) return kid;
      Node rep = make(Node::Repeat, n.pos);
      rep.min = kid_nullable ? 1 : std::max<uint32_t>(n.min, 1);
      rep.max = n.max;
      rep.kids.push_back(std::move(kid));
      return rep;
    }
  }
  return n;
}

class Emitter {
 public:
  explicit Emitter(const std::string& name) : name_(name) {}

  std::string rules(const Node& root) {
    std::string body;
    if (root.kind == Node::Alt) {  // top-level alternation needs no parentheses unless a branch is empty
      std::vector<std::string> branches;
      bool has_empty = false;
      for (const Node& k : root.kids) {
        Expr e = expr(k);
        if (e.text.empty()) {
          has_empty = true;
        } else {
          branches.push_back(e.text);
        }
      }
      body = has_empty ? expr(root).text : join(branches, " | ");
    } else {
      body = expr(root).text;
    }
    // A pattern that matches only the empty text ("", "^$", "(?:)").
    if (body.empty()) body = "\"\"";
    return name_ + " ::= " + body + "\n" + helpers_;
  }

 private:
  struct Expr {
    Expr(std::string t = {}, bool a = false, std::string b = {}) : text(std::move(t)), atom(a), bare(std::move(b)) {}
    std::string text;   // empty: matches only ""
    bool atom = false;  // a single element a postfix operator may follow
    std::string bare;   // an alternation without its parentheses, as the body of a rule
  };

  const std::string& name_;
  std::string helpers_;
  int count_ = 0;

  static std::string join(const std::vector<std::string>& parts, std::string_view sep) {
    std::string out;
    for (size_t k = 0; k < parts.size(); ++k) out += (k ? std::string(sep) : "") + parts[k];
    return out;
  }

  std::string helper(const std::string& body) {
    std::string name = name_ + "-" + std::to_string(++count_);
    helpers_ += name + " ::= " + body + "\n";
    return name;
  }

  // One code point inside a GBNF literal "...". Non-ASCII goes in as UTF-8 text; ASCII controls as \xHH
  // (below 0x80, so byte and code point agree whichever way the grammar reads \x).
  static void literal_char(std::string& out, uint32_t cp) {
    if (cp == '"' || cp == '\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp < 0x20 || cp == 0x7F) {
      out += fmt::format("\\x{:02X}", cp);
    } else if (cp >= 0x80 && cp < 0xA0) {  // C1 controls: invisible as text
      out += fmt::format("\\u{:04X}", cp);
    } else {
      append_utf8(out, cp);
    }
  }

  // One code point inside a GBNF class [...]: the class metacharacters as \xHH.
  static void class_char(std::string& out, uint32_t cp) {
    if (cp == ']' || cp == '[' || cp == '^' || cp == '-' || cp == '\\' || cp == '"' || cp == ' ') {
      out += fmt::format("\\x{:02X}", cp);
    } else {
      literal_char(out, cp);
    }
  }

  static std::string class_text(const CharSet& s, bool negated) {
    std::string out = negated ? "[^" : "[";
    for (const Range& r : s) {
      class_char(out, r.lo);
      if (r.hi == r.lo) continue;
      if (r.hi > r.lo + 1) out += '-';
      class_char(out, r.hi);
    }
    return out + "]";
  }

  static Expr chars(const CharSet& s) {
    if (s.size() == 1 && s[0].lo == s[0].hi) {
      std::string lit = "\"";
      literal_char(lit, s[0].lo);
      // A multi-byte character is several byte elements once compiled; keep postfixes off it.
      return {lit + "\"", s[0].lo < 0x80};
    }
    // Sets reaching the top of Unicode read best (and smallest) as what they leave out: \D, [^"], `.`.
    CharSet rest = complement(s);
    if (contains(s, kMaxCodePoint) && !rest.empty()) return {class_text(rest, true), true};
    return {class_text(s, false), true};
  }

  static std::string postfix(uint32_t min, uint32_t max) {
    if (min == 0 && max == kInf) return "*";
    if (min == 1 && max == kInf) return "+";
    if (min == 0 && max == 1) return "?";
    if (min == max) return fmt::format("{{{}}}", min);
    if (max == kInf) return fmt::format("{{{},}}", min);
    return fmt::format("{{{},{}}}", min, max);
  }

  Expr expr(const Node& n) {
    switch (n.kind) {
      case Node::Empty:
      case Node::Anchor: return {};
      case Node::Void: KS_FAIL("regex: internal error: an empty language reached the emitter");
      case Node::Chars: return chars(n.set);
      case Node::Seq: {
        std::vector<Expr> parts;
        std::string run;  // consecutive single characters become one literal
        size_t run_len = 0;
        bool run_ascii = true;
        auto flush = [&] {
          if (run_len) parts.push_back({"\"" + run + "\"", run_len == 1 && run_ascii});
          run.clear();
          run_len = 0;
          run_ascii = true;
        };
        for (const Node& k : n.kids) {
          if (k.kind == Node::Chars && k.set.size() == 1 && k.set[0].lo == k.set[0].hi) {
            literal_char(run, k.set[0].lo);
            run_ascii = run_ascii && k.set[0].lo < 0x80;
            ++run_len;
            continue;
          }
          flush();
          Expr e = expr(k);
          if (!e.text.empty()) parts.push_back(std::move(e));
        }
        flush();
        if (parts.size() <= 1) return parts.empty() ? Expr{} : parts[0];
        std::vector<std::string> texts;
        for (Expr& e : parts) texts.push_back(std::move(e.text));
        return {join(texts, " "), false};
      }
      case Node::Alt: {
        std::vector<Expr> branches;
        bool has_empty = false;
        for (const Node& k : n.kids) {
          Expr e = expr(k);
          if (e.text.empty()) {
            has_empty = true;
          } else {
            branches.push_back(std::move(e));
          }
        }
        if (branches.empty()) return {};
        if (branches.size() == 1) {
          if (!has_empty) return branches[0];
          return {(branches[0].atom ? branches[0].text : "(" + branches[0].text + ")") + "?", false};  // (x|)
        }
        std::vector<std::string> texts;
        for (Expr& e : branches) texts.push_back(std::move(e.text));
        std::string bare = join(texts, " | ");
        // Not an atom for repetition: a group repeated {m,n} could be expanded as copies of its body.
        if (has_empty) return {"(" + bare + ")?", false};
        return {"(" + bare + ")", false, bare};
      }
      case Node::Repeat: return repeat(n);
    }
    return {};
  }

  Expr repeat(const Node& n) {
    if (n.max == 0) return {};
    const Node* kid = &n.kids[0];
    uint32_t min = n.min;
    Node stripped;
    if (nullable(*kid)) {  // X{m,n} with X able to match "": (X without ""){0,n}
      stripped = without_empty(*kid);
      if (stripped.kind == Node::Void) return {};
      kid = &stripped;
      min = 0;
    }
    Expr e = expr(*kid);
    if (e.text.empty()) return {};
    if (min == 1 && n.max == 1) return e;
    // Anything longer than one element gets its own rule, so nested bounded repetitions expand into
    // references to it rather than into copies of copies.
    std::string operand = e.atom ? e.text : helper(e.bare.empty() ? e.text : e.bare);
    return {operand + postfix(min, n.max), false};
  }
};

}  // namespace

void regex_to_gbnf(std::string_view regex, const std::string& rule_name, std::string& out, const RegexOptions& opt) {
  KS_CHECK(!rule_name.empty() && std::all_of(rule_name.begin(), rule_name.end(),
                                             [](char c) {
                                               return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                                      (c >= '0' && c <= '9') || c == '-';
                                             }),
           "regex: bad rule name '{}' (letters, digits and '-' only)", rule_name);
  Node root = Parser(regex, opt).parse();
  out += Emitter(rule_name).rules(root);
}

std::string regex_grammar(std::string_view regex) {
  std::string out;
  regex_to_gbnf(regex, "root", out);
  return out;
}

}  // namespace kestrel::structured
