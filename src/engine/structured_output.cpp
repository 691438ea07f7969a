#include "engine/structured_output.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "structured/json_schema.h"
#include "structured/regex.h"

namespace kestrel {
namespace {

constexpr size_t kCachedConstraints = 64;

}  // namespace

std::string constraint_grammar(const ConstraintSpec& spec) {
  switch (spec.kind) {
    case ConstraintKind::JsonSchema: {
      nlohmann::ordered_json schema;  // ordered: properties come out in their declared order
      try {
        schema = nlohmann::ordered_json::parse(spec.text);
      } catch (const nlohmann::json::exception& e) {
        KS_FAIL("the JSON schema is not valid JSON: {}", e.what());
      }
      return structured::json_schema_grammar(schema);
    }
    case ConstraintKind::JsonObject: return structured::json_object_grammar();
    case ConstraintKind::Regex: return structured::regex_grammar(spec.text);
    case ConstraintKind::Choice: {
      KS_CHECK(!spec.choices.empty(), "a choice constraint needs at least one choice");
      std::string g = "root ::= ";
      for (size_t i = 0; i < spec.choices.size(); ++i) {
        KS_CHECK(!spec.choices[i].empty(), "choice {} is empty", i);
        g += (i ? " | " : "") + structured::gbnf_literal(spec.choices[i]);
      }
      return g + "\n";
    }
    case ConstraintKind::Grammar: return spec.text;
  }
  KS_FAIL("unknown constraint kind");
}

ConstraintCompiler::ConstraintCompiler(const Tokenizer& tok, int32_t n_logits) {
  KS_CHECK(n_logits >= tok.vocab_size(), "the model has {} logits for a vocabulary of {}", n_logits, tok.vocab_size());
  std::vector<std::string> bytes(n_logits);
  std::vector<structured::Vocabulary::Kind> kind(n_logits, structured::Vocabulary::Never);
  for (int32_t t = 0; t < tok.vocab_size(); ++t) {
    if (tok.is_eog(t)) {
      kind[t] = structured::Vocabulary::EndOfGeneration;
    } else if (!tok.is_special(t)) {
      bytes[t] = tok.token_bytes(t);
      kind[t] = structured::Vocabulary::Text;
    }
  }
  vocab_ = std::make_shared<structured::Vocabulary>(std::move(bytes), std::move(kind));
}

std::shared_ptr<structured::TokenConstraint> ConstraintCompiler::compile(const ConstraintSpec& spec) {
  std::string key = std::to_string(static_cast<int>(spec.kind)) + '\n' + spec.text;
  for (const std::string& c : spec.choices) key += '\n' + std::to_string(c.size()) + ':' + c;
  {
    std::lock_guard lock(mu_);
    if (auto it = index_.find(key); it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      return it->second->second;
    }
  }
  auto c = std::make_shared<structured::TokenConstraint>(structured::compile_gbnf(constraint_grammar(spec)), vocab_);
  std::lock_guard lock(mu_);
  if (auto it = index_.find(key); it != index_.end()) return it->second->second;  // compiled meanwhile
  lru_.emplace_front(key, c);
  index_[key] = lru_.begin();
  if (lru_.size() > kCachedConstraints) {
    index_.erase(lru_.back().first);
    lru_.pop_back();
  }
  return c;
}

}  // namespace kestrel
