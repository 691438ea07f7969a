// The GBNF compiler and the token-level automaton (structured/grammar.h, grammar_matcher.h): what the
// dialect accepts and refuses, byte-level Unicode classes, and the token masks against a brute-force
// check of every token.
#include "structured/grammar.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "core/error.h"
#include "structured/grammar_matcher.h"

namespace kestrel::structured {
namespace {

bool accepts(std::string_view gbnf, std::string_view text) {
  return grammar_accepts(*compile_gbnf(gbnf), text);
}

std::string error_of(std::string_view gbnf) {
  try {
    compile_gbnf(gbnf);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Grammar, LiteralsClassesGroupsAndRepetition) {
  const char* g = R"(
    # a comment
    root ::= greeting ("," ws name)* "!"
    greeting ::= "hi" | "hello"
    name ::= [A-Z] [a-z]{1,4}
    ws ::= " "?
  )";
  EXPECT_TRUE(accepts(g, "hi!"));
  EXPECT_TRUE(accepts(g, "hello, Ann,Bob!"));
  EXPECT_FALSE(accepts(g, "hello, Annabel!"));  // five lower-case letters
  EXPECT_FALSE(accepts(g, "hello, ann!"));
  EXPECT_FALSE(accepts(g, "hello"));
  EXPECT_TRUE(accepts("root ::= \"a\"{2,} \"b\"{,2}", "aaab"));
  EXPECT_FALSE(accepts("root ::= \"a\"{2,} \"b\"{,2}", "abb"));
  EXPECT_FALSE(accepts("root ::= \"a\"{2,} \"b\"{,2}", "aabbb"));
  EXPECT_TRUE(accepts("root ::= \"x\"+ (\"y\" | \"z\")?", "xxxz"));
  EXPECT_TRUE(accepts("root ::= \"\\x41\\u00e9\\n\\t\\\"\\\\\"", "A\xC3\xA9\n\t\"\\"));
}

TEST(Grammar, RulesMaySpanLinesAndAlternativesStartLines) {
  const char* g = "root ::= (\n  \"a\"\n  | \"b\"\n)\n  \"c\"\nother ::= \"x\"\n";
  EXPECT_TRUE(accepts(g, "ac"));
  EXPECT_TRUE(accepts(g, "bc"));
  EXPECT_FALSE(accepts(g, "acx"));
}

TEST(Grammar, UnicodeClassesMatchWholeUtf8Characters) {
  const char* g = "root ::= [^a-c\"]+ [α-ω]";
  EXPECT_TRUE(accepts(g, "xyzβ"));
  EXPECT_TRUE(accepts(g, "日本語ω"));
  EXPECT_TRUE(accepts(g, "😀α"));
  EXPECT_FALSE(accepts(g, "aβ"));
  EXPECT_FALSE(accepts(g, "x€"));              // € is outside α-ω
  EXPECT_FALSE(accepts(g, "x\xCE"));           // half a character
  EXPECT_FALSE(accepts(g, "x\xED\xA0\x80β"));  // an encoded surrogate is no character
  // `.` is any character but a newline.
  EXPECT_TRUE(accepts("root ::= .{3}", "a€😀"));
  EXPECT_FALSE(accepts("root ::= .{3}", "a\nb"));
  // Every code point of a wide range round-trips (the UTF-8 split has no gaps or overlaps).
  const auto wide = compile_gbnf("root ::= [\\u0100-\\U0001F000]");
  for (uint32_t c : {0x100u, 0x7FFu, 0x800u, 0xD7FFu, 0xE000u, 0xFFFFu, 0x10000u, 0x1F000u}) {
    std::string s;
    if (c < 0x800) {
      s = {static_cast<char>(0xC0 | (c >> 6)), static_cast<char>(0x80 | (c & 0x3F))};
    } else if (c < 0x10000) {
      s = {static_cast<char>(0xE0 | (c >> 12)), static_cast<char>(0x80 | ((c >> 6) & 0x3F)),
           static_cast<char>(0x80 | (c & 0x3F))};
    } else {
      s = {static_cast<char>(0xF0 | (c >> 18)), static_cast<char>(0x80 | ((c >> 12) & 0x3F)),
           static_cast<char>(0x80 | ((c >> 6) & 0x3F)), static_cast<char>(0x80 | (c & 0x3F))};
    }
    EXPECT_TRUE(grammar_accepts(*wide, s)) << std::hex << c;
  }
  EXPECT_FALSE(grammar_accepts(*wide, "\xC3\xBF"));          // U+00FF
  EXPECT_FALSE(grammar_accepts(*wide, "\xF0\x9F\x80\x81"));  // U+1F001
}

TEST(Grammar, ErrorsSayWhatAndWhere) {
  EXPECT_NE(error_of("").find("empty"), std::string::npos);
  EXPECT_NE(error_of("root ::= x").find("'x' is used but never defined"), std::string::npos);
  EXPECT_NE(error_of("start ::= \"a\"").find("no 'root' rule"), std::string::npos);
  EXPECT_NE(error_of("root ::= \"a\"\nroot ::= \"b\"").find("defined twice"), std::string::npos);
  EXPECT_NE(error_of("root ::= \"abc").find("unterminated string"), std::string::npos);
  EXPECT_NE(error_of("root ::= [a-").find("unterminated character class"), std::string::npos);
  EXPECT_NE(error_of("root ::= [z-a]").find("backwards"), std::string::npos);
  EXPECT_NE(error_of("root ::= (\"a\"").find("unbalanced"), std::string::npos);
  EXPECT_NE(error_of("root ::= \"a\"{3,1}").find("maximum below its minimum"), std::string::npos);
  EXPECT_NE(error_of("root ::= \"a\"{99999}").find("repetition bound"), std::string::npos);
  EXPECT_NE(error_of("root ::= \"\\q\"").find("unknown escape"), std::string::npos);
  EXPECT_NE(error_of("root ::= \"a\"\n  @").find("line 2, column 3"), std::string::npos);
  // Left recursion, direct and through a nullable prefix, is refused with advice.
  EXPECT_NE(error_of("root ::= root \"a\" | \"b\"").find("left-recursive"), std::string::npos);
  EXPECT_NE(error_of("root ::= x? root \"a\" | \"b\"\nx ::= \"x\"").find("left-recursive"), std::string::npos);
  // Right recursion and nullable repetition are fine.
  EXPECT_TRUE(accepts("root ::= \"a\" root | \"b\"", "aaab"));
  EXPECT_TRUE(accepts("root ::= (\"a\"?)* \"b\"", "aab"));
}

TEST(Grammar, RepetitionKeepsTheAutomatonFlat) {
  // A long run of `x*` must not create a state per character (a tail call reuses its caller's frame).
  const auto g = compile_gbnf(R"(root ::= "\"" [^"]* "\"")");
  Automaton a(g);
  uint32_t s = a.advance(a.start(), "\"");
  const uint32_t inside = a.advance(s, "a");
  EXPECT_EQ(a.advance(inside, std::string(5000, 'b')), inside);
  EXPECT_LT(a.states(), 8u);
  EXPECT_TRUE(a.accepting(a.advance(inside, "\"")));
  EXPECT_FALSE(a.open(a.advance(inside, "\"")));
}

TEST(Grammar, AmbiguousGrammarsAreBoundedNotHung) {
  // Exponentially many parses of the same text collapse into the same stacks.
  const auto g = compile_gbnf("root ::= (\"a\" | \"a\" \"a\" | [a-z])*");
  EXPECT_TRUE(grammar_accepts(*g, std::string(2000, 'a')));
}

// The masks against a brute-force check: a Text token is allowed iff its bytes keep a parse alive; an
// end-of-generation token iff the grammar may end there. Bounded repetitions longer than any token
// exercise the mask contexts' merged counters; long walks reach the ends of the bounds.
TEST(TokenConstraint, MasksEqualBruteForceOverRandomWalks) {
  std::vector<std::string> toks = {"{",  "}",    "\"",  "\"a", "a",  "ab",   "abc",  "b\"",  ":",
                                   ": ", " ",    ",",   "1",   "12", "-",    "0",    "true", "tr",
                                   "ue", "null", "{\"", "\"}", "é",  "\xC3", "\xA9", "[",    "]"};
  std::vector<Vocabulary::Kind> kind(toks.size(), Vocabulary::Text);
  toks.push_back("");  // end of generation
  kind.push_back(Vocabulary::EndOfGeneration);
  toks.push_back("<special>");
  kind.push_back(Vocabulary::Never);
  auto vocab = std::make_shared<Vocabulary>(toks, kind);
  const auto g = compile_gbnf(R"(
    root ::= "{" (pair ("," " "? pair){0,60})? "}"
    pair ::= str ":" " "? value
    value ::= str | num | "true" | "null" | "[" (value ("," value)*)? "]"
    str ::= "\"" [^"]{0,12} "\""
    num ::= "-"? [0-9]{1,30}
  )");
  TokenConstraint c(g, vocab);
  Automaton brute(g);
  std::mt19937 rng(3);
  size_t longest = 0;
  for (int walk = 0; walk < 60; ++walk) {
    uint32_t st = c.start(), bs = brute.start();
    std::string text;
    const int steps = 40 + 8 * walk;
    for (int step = 0; step < steps; ++step) {
      const auto mask = c.mask(st);
      std::vector<int> allowed;
      for (int t = 0; t < vocab->size(); ++t) {
        bool expect;
        if (kind[t] == Vocabulary::Text)
          expect = brute.advance(bs, toks[t]) != Automaton::kDead;
        else
          expect = kind[t] == Vocabulary::EndOfGeneration && brute.accepting(bs);
        const bool got = ((*mask)[t >> 5] >> (t & 31)) & 1;
        ASSERT_EQ(got, expect) << "token '" << toks[t] << "' at step " << step << " of walk " << walk;
        if (got) allowed.push_back(t);
      }
      ASSERT_FALSE(allowed.empty());
      // Avoid closing tokens until the walk's last steps, so walks get deep into the repetitions' bounds.
      std::vector<int> open_ones;
      for (int u : allowed)
        if (kind[u] == Vocabulary::Text && toks[u].find('}') == std::string::npos) open_ones.push_back(u);
      const std::vector<int>& pool = !open_ones.empty() && step + 8 < steps ? open_ones : allowed;
      const int t = pool[rng() % pool.size()];
      if (kind[t] == Vocabulary::EndOfGeneration) {
        EXPECT_EQ(c.next(st, t), st);
        break;
      }
      st = c.next(st, t);
      bs = brute.advance(bs, toks[t]);
      text += toks[t];
      ASSERT_NE(st, Automaton::kDead);
      if (c.finished(st)) break;
    }
    longest = std::max<size_t>(longest, std::count(text.begin(), text.end(), ','));
  }
  EXPECT_GT(longest, 40u) << "no walk got far into the 60-pair bound: " << longest;
  // Special tokens are never allowed, and the same state's mask is cached.
  EXPECT_EQ(c.mask(c.start()).get(), c.mask(c.start()).get());
  EXPECT_EQ(c.next(c.start(), static_cast<int32_t>(toks.size()) - 1), Automaton::kDead);
}

}  // namespace
}  // namespace kestrel::structured
