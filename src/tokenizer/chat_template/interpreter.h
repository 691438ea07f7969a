// Tree-walking evaluator for parsed chat templates, with jinja2's scoping (a fresh scope per loop
// iteration and per macro call; "set" inside "if" stays in the enclosing scope) and the sandboxed
// attribute/item lookup of jinja2's ImmutableSandboxedEnvironment.
#pragma once

#include <ctime>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.h"
#include "tokenizer/chat_template/ast.h"
#include "tokenizer/chat_template/budget.h"
#include "tokenizer/chat_template/value.h"

namespace kestrel::chat_template {

// Thrown by the template's raise_exception(msg): what() is exactly msg, as Hugging Face reports it.
class RaisedError : public Error {
 public:
  using Error::Error;
};

struct Scope;
using ScopePtr = std::shared_ptr<Scope>;

struct Scope {
  ScopePtr parent;
  std::vector<std::pair<std::string, Value>> vars;

  explicit Scope(ScopePtr p) : parent(std::move(p)) {}
  const Value* lookup(std::string_view name) const;
  void set(std::string_view name, Value v);
};

class Interpreter {
 public:
  // now() feeds strftime_now; it is injectable so renders can be reproducible.
  Interpreter(std::function<std::tm()> now, const RenderLimits& limits) : now_(std::move(now)), limits_(limits) {}

  // Throws TemplateBudgetError when the render goes over the limits.
  std::string render(const Body& body, const ValueDict& context);

  // Entry points shared with the builtins.
  Value call(const Value& callee, CallArgs& args);
  std::tm now() const { return now_(); }
  // Sandboxed obj.name and obj[key] (jinja2's environment.getattr / getitem).
  Value get_attr(const Value& obj, std::string_view name);
  Value get_item(const Value& obj, const Value& key);
  // namespace(): a mutable object the interpreter keeps until the render ends (see render()).
  Value make_namespace(ValueDict attrs);

 private:
  enum class Flow { Normal, Break, Continue };

  std::function<std::tm()> now_;
  RenderLimits limits_;
  RenderBudget* budget_ = nullptr;  // the render's, while it runs
  std::string* out_ = nullptr;
  int call_depth_ = 0;
  std::vector<std::shared_ptr<Namespace>> namespaces_;

  void emit(std::string_view text);
  Flow exec_body(const Body& body, const ScopePtr& scope);
  Flow exec(const Node& node, const ScopePtr& scope);
  Flow exec_for(const Node& node, const ScopePtr& scope);
  void exec_set(const Node& node, const ScopePtr& scope);
  std::string render_to_string(const Body& body, const ScopePtr& scope);
  Value make_macro(const Node& node, const ScopePtr& scope);

  // Evaluates and charges the budget for the result (see account()).
  Value eval(const Expr& e, const ScopePtr& scope);
  Value eval_expr(const Expr& e, const ScopePtr& scope);
  void account(const Value& v, Expr::Kind made_by);
  Value eval_compare(const Expr& e, const ScopePtr& scope);
  Value eval_slice(const Expr& e, const ScopePtr& scope);
  CallArgs eval_args(const Expr& e, const ScopePtr& scope, size_t first_child);
  Value apply_filter_chain(const Expr& chain, const Value& input, const ScopePtr& scope);
};

}  // namespace kestrel::chat_template
