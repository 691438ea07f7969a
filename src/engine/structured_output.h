// Structured output as the engine serves it: a request's constraint (a JSON Schema, any JSON object, a
// regex, a choice of strings, or a GBNF grammar) compiled into a token-level automaton over the model's
// vocabulary (structured/grammar_matcher.h). Compiling is the expensive part (the grammar, then each
// state's mask on first use), so constraints are cached by their text: requests with the same schema
// share the automaton and its masks.
#pragma once

#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "structured/grammar_matcher.h"
#include "tokenizer/tokenizer.h"

namespace kestrel {

enum class ConstraintKind : uint8_t { JsonSchema, JsonObject, Regex, Choice, Grammar };

struct ConstraintSpec {
  ConstraintKind kind = ConstraintKind::Grammar;
  std::string text;                  // the schema as JSON text, the regex, or the GBNF grammar
  std::vector<std::string> choices;  // Choice: the texts one of which is produced
};

// The GBNF grammar of a constraint (what `compile` runs). Throws kestrel::Error for an invalid or
// unsupported one.
std::string constraint_grammar(const ConstraintSpec& spec);

class ConstraintCompiler {
 public:
  // n_logits: the model's logit width (may exceed the tokenizer's vocabulary; those ids are never allowed).
  ConstraintCompiler(const Tokenizer& tokenizer, int32_t n_logits);

  // Thread-safe. Throws kestrel::Error (the message says what is wrong with the constraint).
  std::shared_ptr<structured::TokenConstraint> compile(const ConstraintSpec& spec);

 private:
  std::shared_ptr<const structured::Vocabulary> vocab_;
  std::mutex mu_;
  // Most recently used first; a few dozen schemas cover a deployment's traffic.
  std::list<std::pair<std::string, std::shared_ptr<structured::TokenConstraint>>> lru_;
  std::unordered_map<std::string, decltype(lru_)::iterator> index_;
};

}  // namespace kestrel
