// Regular expressions to GBNF (grammar.h), for `regex` / `guided_regex` requests and JSON Schema's
// `pattern`. The whole text must match (as vLLM and Outlines do): ^ and $ (and \A, \z, \Z) are accepted
// where nothing can come before / after them and mean nothing more; elsewhere they are refused.
//
// Supported (Python / JavaScript / PCRE syntax, as their common subset reads it):
//   literals, UTF-8 text included; escaped metacharacters and other symbols (\. \* \\ \/ \- ...);
//   \n \t \r \f \v \a \0 (and Python's \0oo octal), \xHH \x{H..} \uHHHH (a JavaScript surrogate pair
//   \uD83D\uDE00 is one character) \u{H..} \UHHHHHHHH \cX;
//   . (any character but \n); \d \D \w \W \s \S in their ASCII meaning (\d [0-9], \w [a-zA-Z0-9_],
//   \s [ \t\n\r\f\v]; the negated ones are every other character, non-ASCII included);
//   classes [..] [^..] with ranges, shorthands and escapes inside (\b there is backspace), `]` first is a
//   literal (Python: []a] and [^]a]), `-` first or last is a literal, `[` alone is a literal;
//   groups ( ) (?: ) (?<name> ) (?P<name> ) (?'name' ), comments (?#...), alternation | with empty
//   alternatives; quantifiers * + ? {m} {m,} {m,n} {,n} (Python's {0,n}) with bounds up to 10000, and
//   their lazy (*?) forms, which match the same texts in full. Possessive forms (*+) are read as greedy:
//   the grammar then also accepts the rare texts a possessive match would give up on (a*+a matches
//   nothing in PCRE, aa here). A `{` that does not start a valid quantifier is a literal.
// Refused with a kestrel::Error that names the construct and its byte position: back-references (\1,
// \k<..>, (?P=..)), look-ahead and look-behind, \b \B \G, anchors elsewhere, inline flags ((?i),
// (?i:..)), atomic, conditional, branch-reset and recursive groups, \p{..} \P{..}, POSIX classes
// ([[:alpha:]]), other letter escapes, unbalanced parentheses, unterminated classes, a quantifier with
// nothing to repeat or after another, bad ranges (z-a, a-\d), classes that match nothing ([^\s\S]),
// lone surrogates, invalid UTF-8, and groups nested deeper than 256.
#pragma once

#include <string>
#include <string_view>

namespace kestrel::structured {

struct RegexOptions {
  // The text will sit inside a JSON string (JSON Schema `pattern`) unescaped, so the grammar never
  // produces `"`, `\` or U+0000..U+001F: sets that merely span them (., negated classes and shorthands,
  // ranges such as [ -~]) lose them, \s is only the space, and a regex that needs one explicitly (a
  // literal `"` or `\n`, or one written alone in a positive class) is refused: a simplification, since
  // matching it would take emitting its JSON escape.
  bool json_string = false;
};

// Appends GBNF rules to `out` whose rule `rule_name` matches exactly the texts the regex matches in
// full; helper rules are named `rule_name` + "-" + a number (so two calls in one grammar need names that
// do not collide that way). `rule_name` is [a-zA-Z0-9-]+. Throws kestrel::Error for what the regex uses
// that is not supported (and says what it was).
void regex_to_gbnf(std::string_view regex, const std::string& rule_name, std::string& out,
                   const RegexOptions& opt = {});

// A whole grammar: `root` matches the regex.
std::string regex_grammar(std::string_view regex);

}  // namespace kestrel::structured
