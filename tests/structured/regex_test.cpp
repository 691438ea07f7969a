// regex_to_gbnf: the grammar it emits is compiled with compile_gbnf and run with grammar_accepts on
// texts the regex must and must not match in full; every refused construct throws; and a set of regexes
// agrees with std::regex (ECMAScript, regex_match) on every short string over a small alphabet.
#include "structured/regex.h"

#include <gtest/gtest.h>

#include <random>
#include <regex>
#include <string>
#include <vector>

#include "core/error.h"
#include "structured/grammar.h"

namespace kestrel::structured {
namespace {

std::string gbnf(std::string_view re, RegexOptions opt = {}) {
  std::string out;
  regex_to_gbnf(re, "root", out, opt);
  return out;
}

// Every text in `yes` matches the regex in full, none in `no`.
void check(std::string_view re, const std::vector<std::string>& yes, const std::vector<std::string>& no,
           RegexOptions opt = {}) {
  std::string text = gbnf(re, opt);
  SCOPED_TRACE("regex " + std::string(re) + "\n" + text);
  auto g = compile_gbnf(text);
  for (const std::string& s : yes) EXPECT_TRUE(grammar_accepts(*g, s)) << "should match: \"" << s << "\"";
  for (const std::string& s : no) EXPECT_FALSE(grammar_accepts(*g, s)) << "should not match: \"" << s << "\"";
}

// The message of the kestrel::Error the regex is refused with ("" when it is accepted).
std::string refusal(std::string_view re, RegexOptions opt = {}) {
  try {
    gbnf(re, opt);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void expect_refused(std::string_view re, std::string_view mentions, RegexOptions opt = {}) {
  std::string msg = refusal(re, opt);
  EXPECT_NE(msg.find(mentions), std::string::npos)
      << "regex " << re << ": expected an error mentioning \"" << mentions << "\", got \"" << msg << "\"";
}

RegexOptions json() {
  RegexOptions o;
  o.json_string = true;
  return o;
}

TEST(Regex, PhoneNumber) {
  check(R"(\d{3}-\d{4})", {"555-1234", "000-0000"}, {"5551234", "55-1234", "555-12345", "abc-defg", ""});
  check(R"(\(\d{3}\) \d{3}-\d{4})", {"(555) 123-4567"}, {"555 123-4567", "(555)123-4567"});
}

TEST(Regex, EmailLike) {
  const char* re = R"([a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,})";
  check(re, {"john.doe@example.com", "a+b@x.io", "x_y%z@sub.domain.org"},
        {"john@example", "@example.com", "john@.c", "john doe@example.com", "john@example.c"});
}

TEST(Regex, Literals) {
  check("abc", {"abc"}, {"", "ab", "abcd", "abd", "ABC"});
  check("", {""}, {"a"});
  check("a b", {"a b"}, {"ab", "a  b"});
  check(R"(\.\*\+\?\(\)\[\]\{\}\|\\\/\^\$\-)", {R"(.*+?()[]{}|\/^$-)"}, {""});
  check(R"(say "hi")", {R"(say "hi")"}, {"say hi"});
  check("a}b]c", {"a}b]c"}, {});  // lone } and ] are literals (Python, JavaScript)
  check("x{y", {"x{y"}, {"xy"});  // so is a { that does not start a quantifier
  check("x{,y}", {"x{,y}"}, {});
  check(R"({"a": \d+})", {R"({"a": 12})"}, {R"({"a": })"});
}

TEST(Regex, Escapes) {
  check(R"(\n\t\r\f\v\0)", {std::string("\n\t\r\f\v\0", 6)}, {"ntrfv0"});
  check(R"(\x41\x7e\u00e9\u{1F600}\x{263A})", {"A~é😀☺"}, {"x41"});
  check(R"(\uD83D\uDE00)", {"😀"}, {});  // a JavaScript surrogate pair is one character
  check(R"(\U0001F600\cJ\012\a)", {"😀\n\n\a"}, {});
  check(R"(\x00\x1f\x7f\u0085)", {std::string("\0\x1f\x7f\xc2\x85", 5)}, {});
}

TEST(Regex, Shorthands) {
  check(R"(\d+)", {"0", "0123456789"}, {"", "a", "١"});  // ASCII digits only
  check(R"(\w+)", {"abc_XYZ_09"}, {"a-b", "é", " "});
  check(R"(\s+)", {" \t\n\r\f\v"}, {"a", "\xc2\xa0"});
  check(R"(\D)", {"a", "-", "é", "😀", "\n"}, {"5", ""});
  check(R"(\W)", {"-", "é", " "}, {"a", "_", "7"});
  check(R"(\S)", {"a", "é"}, {" ", "\t", "\n"});
}

TEST(Regex, Dot) {
  check(".", {"a", " ", "\t", "é", "😀", "\r"}, {"\n", "", "ab"});
  check("a.c", {"abc", "a.c", "aéc"}, {"ac", "a\nc", "abbc"});
  check(".*", {"", "anything at all", "ünïcödé"}, {"two\nlines"});
}

TEST(Regex, Classes) {
  check("[abc]", {"a", "b", "c"}, {"d", "", "ab"});
  check("[a-fA-F0-9]+", {"deadBEEF", "0"}, {"g", "", "-"});
  check("[^abc]", {"d", "é", "\n"}, {"a", "c", ""});
  check(R"([\d\s])", {"5", " ", "\t"}, {"a"});
  check(R"([^\d\s])", {"a", "é"}, {"5", " "});
  check(R"([\D])", {"a"}, {"5"});
  check("[]a]", {"]", "a"}, {"b"});  // ] first is a literal
  check("[^]a]", {"b"}, {"]", "a"});
  check(R"([a\]b])", {"]", "a", "b"}, {"\\"});
  check("[-a]", {"-", "a"}, {"b"});  // - at either end is a literal
  check("[a-]", {"-", "a"}, {"b"});
  check(R"([a\-z])", {"-", "a", "z"}, {"m"});
  check("[a-c-e]", {"a", "b", "c", "-", "e"}, {"d"});
  check(R"([\x41-\x43\n])", {"A", "C", "\n"}, {"D"});
  check("[.*+?(){}|$^]", {".", "*", "$", "^", "|"}, {"a"});
  check("[[]", {"["}, {"]"});
  check("[\\\\\"]", {"\\", "\""}, {"a"});
  check(R"([\b])", {"\b"}, {"b"});                                         // backspace inside a class
  check(R"([\s\S])", {"a", "\n", "😀", std::string(1, '\0')}, {"", "ab"});  // every character
  check(R"([\0-\x{10FFFF}]{2})", {"a😀", "\n\n"}, {"a"});
}

TEST(Regex, Utf8) {
  check("héllo wörld", {"héllo wörld"}, {"hello world"});
  check("[α-ω]+", {"αβγ", "ω"}, {"a", "Α", ""});
  check("[^α-ω]", {"a", "Α", "😀"}, {"β"});
  check("日本(語|人)", {"日本語", "日本人"}, {"日本"});
  check("é{2}", {"éé"}, {"é", "ééé"});
  check("[😀-😂]{1,2}", {"😀", "😁😂"}, {"😃", ""});
  check("ñ?x", {"x", "ñx"}, {"ññx"});
}

TEST(Regex, Alternation) {
  check("cat|dog|bird", {"cat", "dog", "bird"}, {"cow", "catdog", ""});
  check("a(b|c)d", {"abd", "acd"}, {"ad", "abcd"});
  check("(a|b|c)+", {"a", "abcabc"}, {"", "abd"});
  check("a|", {"a", ""}, {"aa"});  // empty alternatives
  check("|a", {"a", ""}, {"b"});
  check("x(a||b)y", {"xay", "xy", "xby"}, {"xaby"});
  check("(|)", {""}, {"a"});
  check("x(?:)y", {"xy"}, {"x y"});
}

TEST(Regex, Groups) {
  check("(?:ab)+", {"ab", "abab"}, {"", "a", "aba"});
  check("(?<year>\\d{4})-(?P<month>\\d\\d)", {"2024-05"}, {"24-05"});
  check("(?'x'a)b", {"ab"}, {"b"});
  check("((a|b)c)*d", {"d", "acd", "acbcd"}, {"abd", "cd"});
  check("((ab)?c){2}", {"cc", "abcc", "cabc", "abcabc"}, {"c", "abc", "ccc"});
  check("(a(b(c(d)?)?)?)?", {"", "a", "ab", "abc", "abcd"}, {"b", "abd"});
  check("a(?#a comment)b", {"ab"}, {"a(?#a comment)b"});
}

TEST(Regex, Quantifiers) {
  check("a*", {"", "a", "aaaa"}, {"b", "ab"});
  check("a+", {"a", "aaa"}, {""});
  check("ab?c", {"ac", "abc"}, {"abbc"});
  check("a{3}", {"aaa"}, {"aa", "aaaa"});
  check("a{2,}", {"aa", "aaaaaaa"}, {"a", ""});
  check("a{2,4}", {"aa", "aaa", "aaaa"}, {"a", "aaaaa"});
  check("a{0,2}", {"", "a", "aa"}, {"aaa"});
  check("a{,2}", {"", "a", "aa"}, {"aaa"});  // Python's {,n}
  check("a{0}b", {"b"}, {"ab"});
  check("a{1}", {"a"}, {"aa"});
  check("(ab){1,3}", {"ab", "abab", "ababab"}, {"", "aba", "abababab"});
  check("[ab]{2}c{0,1}", {"ab", "bbc"}, {"abcc", "a"});
}

TEST(Regex, RepetitionBoundsAtTheEdges) {
  check("x{10000}", {std::string(10000, 'x')}, {std::string(9999, 'x'), std::string(10001, 'x')});
  check("x{9998,10000}", {std::string(9998, 'x'), std::string(10000, 'x')},
        {std::string(9997, 'x'), std::string(10001, 'x')});
  check("(?:ab){0,10000}", {"", "ab", "abab"}, {"aba"});
  // Nested bounds stay small: the inner group is one rule that the outer one refers to.
  std::string g = gbnf("((a{100}){100}){100}");
  EXPECT_LT(g.size(), 200u) << g;
  EXPECT_NO_THROW(compile_gbnf(g));
}

TEST(Regex, LazyAndPossessiveMatchTheSameTexts) {
  check("a*?b", {"b", "aab"}, {"a"});
  check("a+?", {"a", "aa"}, {""});
  check("a??b", {"b", "ab"}, {"aab"});
  check("a{2,3}?", {"aa", "aaa"}, {"a"});
  check("a*+b", {"b", "aab"}, {"a"});
  check("(ab)++", {"ab", "abab"}, {""});
}

TEST(Regex, RepeatedEmptyMatchesAreNotLeftRecursive) {
  // (X)* with X able to match "" would be a rule reaching itself without a character.
  check("(a?)*", {"", "a", "aaa"}, {"b"});
  check("(a*)+b", {"b", "aab"}, {"a"});
  check("(a|)*", {"", "aa"}, {"b"});
  check("(a?b?)*c", {"c", "abc", "bac", "bbac"}, {"ca"});
  check("(a?){3,}", {"", "a", "aaaaa"}, {"b"});
  check("(a?){2,3}", {"", "a", "aa", "aaa"}, {"aaaa"});
  check("(()|a*)*x", {"x", "aax"}, {"a"});
  check("(?:)*x", {"x"}, {""});
}

TEST(Regex, Anchors) {
  check("^abc$", {"abc"}, {"", "xabc", "abcx"});
  check("^a|b$", {"a", "b"}, {"ab"});
  check("(^a|b$)", {"a", "b"}, {});
  check("^$", {""}, {"a"});
  check("^(?:^a)", {"a"}, {});
  check(R"(\Aab\z)", {"ab"}, {"a"});
  check("^", {""}, {"x"});
}

TEST(Regex, JsonStringMode) {
  check(".*", {"", "plain text", "ünï"}, {"\"", "\\", "a\nb", "\t", std::string(1, '\0')}, json());
  check("[^a]+", {"bcd", "é"}, {"a", "\"", "\\", "\x1f"}, json());
  check(R"(\D\W\S)", {"a-b"}, {"\"-b", "a\"b", "a-\\"}, json());
  check(R"(a\sb)", {"a b"}, {"a\tb", "a\nb"}, json());
  check(R"([\s\S]+)", {" ", "x y"}, {"\n", "\""}, json());
  check("[ -~]+", {"hello world~"}, {"\"", "\\"}, json());  // printable ASCII less " and \ (a range)
  check("[^\"\\\\]*", {"abc"}, {"\""}, json());             // excluding them is fine
  check(R"(\d{3}-[a-z]+)", {"123-abc"}, {"123-ABC"}, json());
  expect_refused("a\"b", "must be escaped inside a JSON string", json());
  expect_refused(R"(a\\b)", "must be escaped inside a JSON string", json());
  expect_refused(R"(\n)", "must be escaped inside a JSON string", json());
  expect_refused(R"(\x00)", "must be escaped inside a JSON string", json());
  expect_refused("[a\"]", "must be escaped inside a JSON string", json());
  expect_refused(R"([\t])", "must be escaped inside a JSON string", json());
  expect_refused(R"([\x00-\x1f])", "matches no character", json());
  EXPECT_EQ(refusal("a\"b"), "");  // fine outside a JSON string
  // As the body of a JSON string in a larger grammar.
  std::string g = "root ::= \"\\\"\" body \"\\\"\"\n";
  regex_to_gbnf(R"([^@\s]+@[^@\s]+)", "body", g, json());
  SCOPED_TRACE(g);
  auto compiled = compile_gbnf(g);
  EXPECT_TRUE(grammar_accepts(*compiled, R"("a.b@c.d")"));
  EXPECT_FALSE(grammar_accepts(*compiled, R"("a"b@c.d")"));
  EXPECT_FALSE(grammar_accepts(*compiled, R"("a@b@c")"));
}

TEST(Regex, Refused) {
  expect_refused(R"((a)\1)", "back-references");
  expect_refused(R"((?<x>a)\k<x>)", "back-references");
  expect_refused(R"((?P<x>a)(?P=x))", "back-references");
  expect_refused("a(?=b)", "look-ahead");
  expect_refused("a(?!b)", "look-ahead");
  expect_refused("(?<=a)b", "look-behind");
  expect_refused("(?<!a)b", "look-behind");
  expect_refused(R"(\bword\b)", "word boundaries");
  expect_refused(R"(a\Bb)", "word boundaries");
  expect_refused("a^b", "anchor in the middle");
  expect_refused("a$b", "anchor in the middle");
  expect_refused("(^a)*", "anchor in the middle");
  expect_refused("(^)?x", "anchor in the middle");
  expect_refused("x(^a)", "anchor in the middle");
  expect_refused("^*a", "quantifier after the anchor");
  expect_refused("(?i)abc", "inline flags");
  expect_refused("(?i:abc)", "inline flags");
  expect_refused("(?-i:abc)", "inline flags");
  expect_refused(R"(\p{L})", "Unicode property");
  expect_refused(R"(\P{Lu})", "Unicode property");
  expect_refused("(ab", "never closed");
  expect_refused("ab)", "')' without a matching '('");
  expect_refused("((a)", "never closed");
  expect_refused("*a", "nothing to repeat");
  expect_refused("a|+", "nothing to repeat");
  expect_refused("(?)", "not supported");
  expect_refused("(*)", "nothing to repeat");
  expect_refused("{2}", "nothing to repeat");
  expect_refused("a**", "multiple repeat");
  expect_refused("a{2}{3}", "multiple repeat");
  expect_refused("[z-a]", "bad character range");
  expect_refused(R"([a-\d])", "bad character range");
  expect_refused(R"([\d-z])", "bad character range");
  expect_refused("[abc", "never closed");
  expect_refused("a{3,2}", "min > max");
  expect_refused("a{10001}", "exceeds the limit of 10000");
  expect_refused("a{1,99999999999999999999}", "exceeds the limit of 10000");
  expect_refused("(?>a)", "atomic groups");
  expect_refused("(?R)", "recursive");
  expect_refused("(?(1)a|b)", "conditional");
  expect_refused("[[:alpha:]]", "POSIX");
  expect_refused(R"(\q)", "escapes like this");
  expect_refused("a\\", "lone '\\'");
  expect_refused(R"(\uD800)", "surrogate");
  expect_refused(R"(\x{110000})", "beyond U+10FFFF");
  expect_refused(R"(\xZZ)", "hex digits");
  expect_refused(R"([^\s\S])", "matches no character");
  expect_refused("\xff", "invalid UTF-8");
  expect_refused(std::string(300, '(') + std::string(300, ')'), "nested deeper");
  // The message says where.
  EXPECT_NE(refusal("abc(?=x)").find("position 3"), std::string::npos) << refusal("abc(?=x)");
}

TEST(Regex, RuleNames) {
  std::string out = "root ::= num \" \" num\n";
  regex_to_gbnf("(\\d+|x)(\\.\\d+)?", "num", out);
  SCOPED_TRACE(out);
  for (size_t p = 0; (p = out.find("::=", p)) != std::string::npos; ++p) {
    size_t line = out.rfind('\n', p);
    std::string name = out.substr(line == std::string::npos ? 0 : line + 1, p - line - 2);
    EXPECT_TRUE(name == "root" || name == "num" || name.starts_with("num-")) << name;
  }
  auto g = compile_gbnf(out);
  EXPECT_TRUE(grammar_accepts(*g, "12.5 x"));
  EXPECT_FALSE(grammar_accepts(*g, "12. x"));
  EXPECT_THROW(regex_to_gbnf("a", "bad_name", out), Error);
  EXPECT_THROW(regex_to_gbnf("a", "", out), Error);
  EXPECT_EQ(regex_grammar("a").substr(0, 9), "root ::= ");
}

// Against std::regex (ECMAScript) on every string up to length 5 over a small alphabet, and on random
// longer ones: only constructs both read the same way.
TEST(Regex, AgreesWithStdRegex) {
  const std::vector<std::string> patterns = {
      "a*b",           "(a|b)*abb",     "[ab]{2,3}",    "a?b+|1",          "(ab|a)(b|)",    "[^a]*",
      R"(\d+(-\d+)?)", "(a|b)*?b",      ".a.",          "(a+|b+)*1",       "a{2}b{0,2}",    "(?:a|ab)(?:c|bcd)?",
      "[-a]+1?",       R"([\w-]{1,3})", R"(\W*\d)",     "(a|)+b",          "((a|b)(a|1))*", "[a1]*-[^-]{2,}",
      "b|(a(b|1)*)?",  "(a*)*(b?)?1*",  R"(\D{2,}|\d)", "a(?:b|-){1,2}?1", R"(\S\s?\S)",    "(|a|ab|-)*-?",
  };
  const std::string alphabet = "ab1- ";
  std::vector<std::string> texts = {""};
  for (size_t len = 1, begin = 0; len <= 5; ++len) {
    size_t end = texts.size();
    for (size_t k = begin; k < end; ++k)
      for (char c : alphabet) texts.push_back(texts[k] + c);
    begin = end;
  }
  std::mt19937 rng(42);
  for (int k = 0; k < 300; ++k) {
    std::string s;
    for (size_t n = 6 + rng() % 10; n--;) s += alphabet[rng() % alphabet.size()];
    texts.push_back(s);
  }
  for (const std::string& re : patterns) {
    std::regex ref(re, std::regex::ECMAScript);
    std::string text = gbnf(re);
    auto g = compile_gbnf(text);
    int mismatches = 0;
    for (const std::string& s : texts) {
      bool want = std::regex_match(s, ref), got = grammar_accepts(*g, s);
      if (want != got && ++mismatches <= 3) {
        ADD_FAILURE() << "regex " << re << " on \"" << s << "\": std::regex " << want << ", grammar " << got << "\n"
                      << text;
      }
    }
  }
}

}  // namespace
}  // namespace kestrel::structured
