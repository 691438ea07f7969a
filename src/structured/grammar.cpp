// The GBNF compiler: a recursive-descent parser over llama.cpp's dialect that builds rules of byte-level
// alternatives directly. Repetitions become right-recursive helper rules (the matcher turns a call in
// tail position into a jump, so `x*` runs in constant stack depth); character classes become their
// UTF-8 byte sequences. Then every rule is checked for definition and for left recursion.
#include "structured/grammar.h"

#include <algorithm>
#include <functional>
#include <map>
#include <unordered_map>

#include "core/error.h"
#include "core/utf8.h"

namespace kestrel::structured {
namespace {

constexpr uint32_t kMaxCodePoint = 0x10FFFF;
constexpr int kMaxRepeat = 10000;  // bound of {m,n}: beyond it the unrolled rules are absurd

using Seq = std::vector<Element>;
using CodeRanges = std::vector<std::pair<uint32_t, uint32_t>>;  // inclusive, sorted, disjoint

CodeRanges normalize(CodeRanges r) {
  std::sort(r.begin(), r.end());
  CodeRanges out;
  for (auto [a, b] : r) {
    if (!out.empty() && a <= out.back().second + 1)
      out.back().second = std::max(out.back().second, b);
    else
      out.emplace_back(a, b);
  }
  return out;
}

// The code points not in `r` (surrogates are never characters).
CodeRanges complement(const CodeRanges& r) {
  CodeRanges out;
  uint32_t next = 0;
  for (auto [a, b] : r) {
    if (a > next) out.emplace_back(next, a - 1);
    next = b + 1;
  }
  if (next <= kMaxCodePoint) out.emplace_back(next, kMaxCodePoint);
  return out;
}

class Compiler {
 public:
  Compiler(std::string_view text) : src_(text) {}

  std::shared_ptr<Grammar> run(std::string_view root_name) {
    skip_space();
    KS_CHECK(pos_ < src_.size(), "the grammar is empty: it needs at least a `root ::= ...` rule");
    while (pos_ < src_.size()) {
      const size_t at = pos_;
      const std::string name = parse_name();
      skip_space();
      if (!src_.substr(pos_).starts_with("::=")) fail(at, fmt::format("expected '::=' after the rule name '{}'", name));
      pos_ += 3;
      const uint32_t r = rule_id(name);
      if (defined_[r]) fail(at, fmt::format("rule '{}' is defined twice", name));
      defined_[r] = true;
      alts_[r] = parse_alternatives(name, false);
      skip_space();
    }
    for (size_t r = 0; r < names_.size(); ++r)
      KS_CHECK(defined_[r], "grammar: rule '{}' is used but never defined", names_[r]);
    auto it = ids_.find(std::string(root_name));
    KS_CHECK(it != ids_.end(), "grammar: no '{}' rule (the start rule)", root_name);
    check_left_recursion();
    return flatten(it->second);
  }

 private:
  [[noreturn]] void fail(size_t at, const std::string& what) const {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < at && i < src_.size(); ++i) {
      if (src_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    KS_FAIL("grammar: {} (line {}, column {})", what, line, col);
  }

  // Whitespace, newlines and # comments.
  void skip_space() {
    while (pos_ < src_.size()) {
      const char c = src_[pos_];
      if (c == '#') {
        while (pos_ < src_.size() && src_[pos_] != '\n') ++pos_;
      } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        ++pos_;
      } else {
        break;
      }
    }
  }

  static bool name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  }

  std::string parse_name() {
    const size_t b = pos_;
    while (pos_ < src_.size() && name_char(src_[pos_])) ++pos_;
    if (b == pos_) fail(b, "expected a rule name");
    return std::string(src_.substr(b, pos_ - b));
  }

  // Whether a new rule (`name ::=`) starts at pos_.
  bool at_rule_start() const {
    size_t p = pos_;
    while (p < src_.size() && name_char(src_[p])) ++p;
    if (p == pos_) return false;
    while (p < src_.size() && (src_[p] == ' ' || src_[p] == '\t' || src_[p] == '\n' || src_[p] == '\r')) ++p;
    return src_.substr(p).starts_with("::=");
  }

  uint32_t rule_id(const std::string& name) {
    auto [it, fresh] = ids_.try_emplace(name, static_cast<uint32_t>(names_.size()));
    if (fresh) {
      names_.push_back(name);
      alts_.emplace_back();
      defined_.push_back(false);
    }
    return it->second;
  }

  uint32_t new_rule(const std::string& parent, std::vector<Seq> alts) {
    std::string name;
    do name = fmt::format("{}_{}", parent, ++generated_);
    while (ids_.count(name));
    const uint32_t r = rule_id(name);
    defined_[r] = true;
    alts_[r] = std::move(alts);
    return r;
  }

  uint32_t byte_set(const ByteSet& s) {
    auto [it, fresh] = set_ids_.try_emplace(s, static_cast<uint32_t>(sets_.size()));
    if (fresh) sets_.push_back(s);
    return it->second;
  }
  Element bytes(uint8_t lo, uint8_t hi) {
    ByteSet s{};
    for (unsigned b = lo; b <= hi; ++b) s[b >> 6] |= uint64_t{1} << (b & 63);
    return {Element::Bytes, byte_set(s)};
  }

  std::vector<Seq> parse_alternatives(const std::string& rule, bool nested) {
    std::vector<Seq> alts;
    alts.push_back(parse_sequence(rule, nested));
    while (pos_ < src_.size() && src_[pos_] == '|') {
      ++pos_;
      alts.push_back(parse_sequence(rule, nested));
    }
    return alts;
  }

  Seq parse_sequence(const std::string& rule, bool nested) {
    Seq seq;
    for (;;) {
      skip_space();
      if (pos_ >= src_.size()) break;
      const char c = src_[pos_];
      if (c == '|' || c == ')') break;
      if (!nested && at_rule_start()) break;
      const size_t at = pos_;
      Seq item = parse_item(rule);
      // Postfix operators apply to the item just parsed.
      while (pos_ < src_.size() && (src_[pos_] == '*' || src_[pos_] == '+' || src_[pos_] == '?' || src_[pos_] == '{')) {
        int lo = 0, hi = -1;  // hi -1: unbounded
        const char op = src_[pos_++];
        if (op == '+') lo = 1;
        if (op == '?') hi = 1;
        if (op == '{') parse_bounds(at, lo, hi);
        item = repeat(rule, std::move(item), lo, hi);
      }
      seq.insert(seq.end(), item.begin(), item.end());
    }
    return seq;
  }

  int parse_int(size_t at) {
    const size_t b = pos_;
    long v = 0;
    while (pos_ < src_.size() && src_[pos_] >= '0' && src_[pos_] <= '9') {
      v = v * 10 + (src_[pos_++] - '0');
      if (v > kMaxRepeat) fail(at, fmt::format("a repetition bound above {} is not supported", kMaxRepeat));
    }
    if (b == pos_) fail(pos_, "expected a number in the repetition bounds");
    return static_cast<int>(v);
  }

  void parse_bounds(size_t at, int& lo, int& hi) {
    skip_space();
    lo = src_[pos_] == ',' ? 0 : parse_int(at);
    skip_space();
    if (pos_ < src_.size() && src_[pos_] == ',') {
      ++pos_;
      skip_space();
      hi = (pos_ < src_.size() && src_[pos_] == '}') ? -1 : parse_int(at);
    } else {
      hi = lo;
    }
    skip_space();
    if (pos_ >= src_.size() || src_[pos_] != '}') fail(pos_, "expected '}' closing the repetition bounds");
    ++pos_;
    if (hi >= 0 && hi < lo) fail(at, fmt::format("repetition {{{},{}}} has its maximum below its minimum", lo, hi));
  }

  // item repeated lo..hi times (hi -1: no bound).
  Seq repeat(const std::string& rule, Seq item, int lo, int hi) {
    if (item.size() != 1) item = Seq{{Element::Rule, new_rule(rule, {item})}};
    Seq out;
    for (int i = 0; i < lo; ++i) out.push_back(item[0]);
    if (hi < 0) {  // star ::= item star | ""
      const uint32_t star = new_rule(rule, {});
      alts_[star] = {Seq{item[0], {Element::Rule, star}}, Seq{}};
      out.push_back({Element::Rule, star});
    } else if (hi > lo) {  // opt_k ::= item opt_{k-1} | "" with opt_1 ::= item | ""
      uint32_t opt = new_rule(rule, {Seq{item[0]}, Seq{}});
      std::vector<uint32_t> chain{opt};
      for (int k = 2; k <= hi - lo; ++k) {
        opt = new_rule(rule, {Seq{item[0], {Element::Rule, opt}}, Seq{}});
        chain.push_back(opt);
      }
      chains_.emplace_back(std::move(chain), item[0]);
      out.push_back({Element::Rule, opt});
    }
    return out;
  }

  Seq parse_item(const std::string& rule) {
    const size_t at = pos_;
    const char c = src_[pos_];
    if (c == '"') {
      ++pos_;
      Seq seq;
      std::string utf8;
      for (;;) {
        if (pos_ >= src_.size()) fail(at, "unterminated string literal");
        if (src_[pos_] == '"') break;
        if (src_[pos_] == '\n') fail(pos_, "a newline inside a string literal (write \\n)");
        utf8.clear();
        append_utf8(utf8, parse_char());
        for (unsigned char b : utf8) seq.push_back(bytes(b, b));
      }
      ++pos_;
      return seq;
    }
    if (c == '[') return parse_class(rule);
    if (c == '.') {
      ++pos_;
      return code_ranges(rule, complement({{'\n', '\n'}, {0xD800, 0xDFFF}}));
    }
    if (c == '(') {
      ++pos_;
      std::vector<Seq> alts = parse_alternatives(rule, true);
      skip_space();
      if (pos_ >= src_.size() || src_[pos_] != ')') fail(at, "unbalanced '(': expected ')'");
      ++pos_;
      if (alts.size() == 1 && !alts[0].empty()) return std::move(alts[0]);
      return {{Element::Rule, new_rule(rule, std::move(alts))}};
    }
    if (name_char(c)) return {{Element::Rule, rule_id(parse_name())}};
    fail(at, fmt::format("unexpected character '{}'", c));
  }

  // One (possibly escaped) character of a literal or class, as a code point; the text is UTF-8.
  uint32_t parse_char() {
    const size_t at = pos_;
    const auto c = static_cast<unsigned char>(src_[pos_]);
    if (c == '\\') {
      if (pos_ + 1 >= src_.size()) fail(at, "a lone '\\' at the end of the grammar");
      const char e = src_[pos_ + 1];
      pos_ += 2;
      switch (e) {
        case 'n': return '\n';
        case 'r': return '\r';
        case 't': return '\t';
        case '0': return 0;
        case 'x': return parse_hex(at, 2);
        case 'u': return parse_hex(at, 4);
        case 'U': return parse_hex(at, 8);
        case '\\':
        case '"':
        case '\'':
        case '[':
        case ']':
        case '-':
        case '^':
        case '/': return static_cast<unsigned char>(e);
        default: fail(at, fmt::format("unknown escape '\\{}'", e));
      }
    }
    const std::optional<uint32_t> cp = next_utf8(src_, pos_);
    if (!cp) fail(at, "the grammar is not valid UTF-8");
    return *cp;
  }

  uint32_t parse_hex(size_t at, int digits) {
    uint32_t v = 0;
    for (int i = 0; i < digits; ++i) {
      if (pos_ >= src_.size()) fail(at, "a truncated hexadecimal escape");
      const char h = src_[pos_++];
      const int d = h >= '0' && h <= '9'   ? h - '0'
                    : h >= 'a' && h <= 'f' ? h - 'a' + 10
                    : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                           : -1;
      if (d < 0) fail(at, "a bad hexadecimal escape");
      v = v * 16 + d;
    }
    if (v > kMaxCodePoint || (v >= 0xD800 && v <= 0xDFFF)) fail(at, fmt::format("U+{:X} is not a character", v));
    return v;
  }

  Seq parse_class(const std::string& rule) {
    const size_t at = pos_++;
    bool negated = false;
    if (pos_ < src_.size() && src_[pos_] == '^') {
      negated = true;
      ++pos_;
    }
    CodeRanges r;
    while (true) {
      if (pos_ >= src_.size()) fail(at, "unterminated character class '['");
      if (src_[pos_] == ']') break;
      const uint32_t a = parse_char();
      uint32_t b = a;
      if (pos_ + 1 < src_.size() && src_[pos_] == '-' && src_[pos_ + 1] != ']') {
        ++pos_;
        b = parse_char();
        if (b < a) fail(at, fmt::format("the range U+{:X}-U+{:X} is backwards", a, b));
      }
      r.emplace_back(a, b);
    }
    ++pos_;
    if (negated) {
      r.emplace_back(0xD800, 0xDFFF);  // surrogates are never characters
      r = complement(normalize(r));
    } else {
      CodeRanges keep;
      for (auto [a, b] : normalize(r)) {
        if (b < 0xD800 || a > 0xDFFF) {
          keep.emplace_back(a, b);
          continue;
        }
        if (a < 0xD800) keep.emplace_back(a, 0xD7FF);
        if (b > 0xDFFF) keep.emplace_back(0xE000, b);
      }
      r = keep;
    }
    if (r.empty()) fail(at, "the character class matches nothing");
    return code_ranges(rule, r);
  }

  // The UTF-8 byte sequences of a set of code points: one byte-set element when they are all ASCII,
  // else a rule with one alternative per aligned block of equal-length encodings.
  Seq code_ranges(const std::string& rule, const CodeRanges& r) {
    std::vector<Seq> alts;
    ByteSet ascii{};
    bool any_ascii = false;
    for (auto [a, b] : r) {
      for (uint32_t lo = a; lo <= b;) {
        const uint32_t end = lo < 0x80 ? 0x7F : lo < 0x800 ? 0x7FF : lo < 0x10000 ? 0xFFFF : kMaxCodePoint;
        const uint32_t hi = std::min(b, end);
        if (lo < 0x80) {
          for (uint32_t c = lo; c <= hi; ++c) ascii[c >> 6] |= uint64_t{1} << (c & 63);
          any_ascii = true;
        } else {
          split_utf8(lo, hi, alts);
        }
        if (hi == kMaxCodePoint) break;
        lo = hi + 1;
      }
    }
    if (alts.empty()) return {{Element::Bytes, byte_set(ascii)}};
    if (any_ascii) alts.insert(alts.begin(), Seq{{Element::Bytes, byte_set(ascii)}});
    return {{Element::Rule, new_rule(rule, std::move(alts))}};
  }

  // [lo, hi] of one encoded length, cut where a continuation byte's range would not be a full product.
  void split_utf8(uint32_t lo, uint32_t hi, std::vector<Seq>& alts) {
    const int n = lo < 0x800 ? 2 : lo < 0x10000 ? 3 : 4;
    for (int i = 1; i < n; ++i) {
      const uint32_t m = (1u << (6 * i)) - 1;
      if ((lo & ~m) != (hi & ~m)) {
        if ((lo & m) != 0) {
          split_utf8(lo, lo | m, alts);
          split_utf8((lo | m) + 1, hi, alts);
          return;
        }
        if ((hi & m) != m) {
          split_utf8(lo, (hi & ~m) - 1, alts);
          split_utf8(hi & ~m, hi, alts);
          return;
        }
      }
    }
    std::string a, b;
    append_utf8(a, lo);
    append_utf8(b, hi);
    Seq seq;
    for (int i = 0; i < n; ++i) seq.push_back(bytes(static_cast<uint8_t>(a[i]), static_cast<uint8_t>(b[i])));
    alts.push_back(std::move(seq));
  }

  // A call that is not in tail position pushes a return frame; a cycle of calls reachable without
  // consuming a byte that includes such a call grows the stack forever. Such cycles are refused.
  void check_left_recursion() {
    const size_t R = alts_.size();
    std::vector<bool> nullable(R, false);
    for (bool changed = true; changed;) {
      changed = false;
      for (size_t r = 0; r < R; ++r) {
        if (nullable[r]) continue;
        for (const Seq& s : alts_[r])
          if (std::all_of(s.begin(), s.end(),
                          [&](const Element& e) { return e.kind == Element::Rule && nullable[e.index]; })) {
            nullable[r] = changed = true;
            break;
          }
      }
    }
    struct Edge {
      uint32_t to;
      bool tail;
    };
    std::vector<std::vector<Edge>> edges(R);
    for (size_t r = 0; r < R; ++r)
      for (const Seq& s : alts_[r])
        for (size_t i = 0; i < s.size(); ++i) {
          if (s[i].kind != Element::Rule) break;
          edges[r].push_back({s[i].index, i + 1 == s.size()});
          if (!nullable[s[i].index]) break;
        }
    // Strongly connected components (Tarjan, iterative would be overkill: depth is the rule count).
    std::vector<int> index(R, -1), low(R, 0), comp(R, -1);
    std::vector<uint32_t> stack;
    std::vector<bool> on(R, false);
    int counter = 0, n_comp = 0;
    std::function<void(uint32_t)> visit = [&](uint32_t v) {
      index[v] = low[v] = counter++;
      stack.push_back(v);
      on[v] = true;
      for (const Edge& e : edges[v]) {
        if (index[e.to] < 0) {
          visit(e.to);
          low[v] = std::min(low[v], low[e.to]);
        } else if (on[e.to]) {
          low[v] = std::min(low[v], index[e.to]);
        }
      }
      if (low[v] == index[v]) {
        uint32_t w;
        do {
          w = stack.back();
          stack.pop_back();
          on[w] = false;
          comp[w] = n_comp;
        } while (w != v);
        ++n_comp;
      }
    };
    for (uint32_t r = 0; r < R; ++r)
      if (index[r] < 0) visit(r);
    for (uint32_t r = 0; r < R; ++r)
      for (const Edge& e : edges[r])
        if (comp[e.to] == comp[r] && !e.tail)
          KS_FAIL(
              "grammar: rule '{}' is left-recursive (it can reach itself without matching a character); "
              "rewrite it with repetition, e.g. `list ::= item (\",\" item)*`",
              names_[r]);
  }

  std::shared_ptr<Grammar> flatten(uint32_t root) {
    auto g = std::make_shared<Grammar>();
    g->byte_sets = sets_;
    g->rule_names = names_;
    g->root = root;
    g->rules.resize(alts_.size());
    for (size_t r = 0; r < alts_.size(); ++r)
      for (const Seq& s : alts_[r]) {
        g->rules[r].push_back(static_cast<uint32_t>(g->elements.size()));
        g->elements.insert(g->elements.end(), s.begin(), s.end());
        g->elements.push_back({Element::End, 0});
        g->element_rule.resize(g->elements.size(), static_cast<uint32_t>(r));
      }
    // The fewest bytes each rule matches (a fixpoint from "unknown"), for the repetitions' items.
    constexpr uint32_t kInf = 0xFFFFFFFFu;
    std::vector<uint32_t> min_bytes(alts_.size(), kInf);
    for (bool changed = true; changed;) {
      changed = false;
      for (size_t r = 0; r < alts_.size(); ++r)
        for (const Seq& s : alts_[r]) {
          uint64_t n = 0;
          for (const Element& e : s) n += e.kind == Element::Bytes ? 1 : min_bytes[e.index];
          if (n < min_bytes[r]) {
            min_bytes[r] = static_cast<uint32_t>(n);
            changed = true;
          }
        }
    }
    for (auto& [chain, item] : chains_)
      g->repetitions.push_back({chain, item.kind == Element::Bytes ? 1u : min_bytes[item.index]});
    return g;
  }

  std::string_view src_;
  size_t pos_ = 0;
  int generated_ = 0;
  std::unordered_map<std::string, uint32_t> ids_;
  std::vector<std::string> names_;
  std::vector<std::vector<Seq>> alts_;
  std::vector<bool> defined_;
  std::vector<ByteSet> sets_;
  std::map<ByteSet, uint32_t> set_ids_;
  std::vector<std::pair<std::vector<uint32_t>, Element>> chains_;  // bounded repetitions: opt_1.. and the item
};

}  // namespace

std::shared_ptr<const Grammar> compile_gbnf(std::string_view gbnf, std::string_view root) {
  return Compiler(gbnf).run(root);
}

std::string gbnf_literal(std::string_view s) {
  std::string out = "\"";
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7F)
          out += fmt::format("\\x{:02X}", c);
        else
          out += ch;
    }
  }
  return out + "\"";
}

}  // namespace kestrel::structured
