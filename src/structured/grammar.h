// Grammars for structured output: llama.cpp's GBNF dialect compiled to a byte-level grammar (every
// terminal is a set of bytes; a Unicode character class becomes the UTF-8 byte sequences of its code
// points), which grammar_matcher.h runs as a pushdown automaton over the bytes of generated tokens.
// JSON Schema (json_schema.h) and regular expressions (regex.h) are translated to GBNF text first, so
// every constraint kind goes through this one compiler.
//
// GBNF as accepted here (llama.cpp's grammars/README.md):
//   rule     ::= name "::=" alternatives          (the start rule is `root`)
//   name       [a-zA-Z0-9_-]+
//   literal    "text" with escapes \n \r \t \\ \" \' \[ \] \xHH \uHHHH \UHHHHHHHH
//   class      [abc] [a-z] [^"\\] with the same escapes; `.` is any character but \n
//   group      ( alternatives )
//   postfix    * + ? {m} {m,} {m,n} {,n}
//   comments   # to the end of the line
// A rule may span lines; it ends where the next `name ::=` begins. Left recursion is refused (the
// automaton would not terminate), as are undefined rules and an empty grammar.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace kestrel::structured {

// One element of an alternative: a set of bytes to match, a rule to expand, or the alternative's end.
struct Element {
  enum Kind : uint8_t { Bytes, Rule, End };
  Kind kind = End;
  uint32_t index = 0;  // Bytes: into Grammar::byte_sets; Rule: into Grammar::rules
};

using ByteSet = std::array<uint64_t, 4>;  // bit b set: byte b matches

struct Grammar {
  std::vector<Element> elements;             // every alternative's elements, each closed by an End
  std::vector<ByteSet> byte_sets;            // deduplicated
  std::vector<std::vector<uint32_t>> rules;  // rule -> the element index where each alternative starts
  std::vector<std::string> rule_names;       // for messages (generated rules are named "<parent>_<n>")
  uint32_t root = 0;
  std::vector<uint32_t> element_rule;  // element -> the rule it belongs to
  // Bounded repetitions x{m,n} unroll into a chain of rules opt_1 .. opt_(n-m), opt_k allowing at most k
  // more x's (opt_k ::= x opt_(k-1) | ""). The mask cache treats opt_k and opt_j alike where no token is
  // long enough to tell them apart (grammar_matcher.h).
  struct Repetition {
    std::vector<uint32_t> chain;  // chain[k - 1] = opt_k
    uint32_t item_min_bytes = 0;  // the fewest bytes one x matches
  };
  std::vector<Repetition> repetitions;
};

// Compiles GBNF text. Throws kestrel::Error that names the line and column of a syntax error, an
// undefined rule, or a left-recursive rule.
std::shared_ptr<const Grammar> compile_gbnf(std::string_view gbnf, std::string_view root = "root");

// Whether `text` (bytes) is a complete match of the grammar, and whether it is a prefix of some match
// (for tests and for checking finished outputs).
bool grammar_accepts(const Grammar& g, std::string_view text);
bool grammar_accepts_prefix(const Grammar& g, std::string_view text);

// `s` as a GBNF literal, quotes included ("a\"b").
std::string gbnf_literal(std::string_view s);

}  // namespace kestrel::structured
