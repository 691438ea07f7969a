#include "tokenizer/chat_template/interpreter.h"

#include <fmt/format.h>

#include "tokenizer/chat_template/builtins.h"
#include "tokenizer/chat_template/py_string.h"

namespace kestrel::chat_template {
namespace {

// Errors that already carry their template line pass through enclosing statements unchanged.
class LocatedError : public Error {
 public:
  using Error::Error;
};

// Python recursion would stop a runaway macro long before the native stack does.
constexpr int kMaxCallDepth = 100;
// A loop iteration builds its scope and loop object: about as much work as twenty expressions.
constexpr uint64_t kLoopIterationSteps = 20;

std::string object_type_repr(const Value& v) {
  if (v.is_none()) return "None";
  return v.type_name() + " object";
}

Value missing_attribute(const Value& obj, std::string_view name) {
  return Value::undefined(fmt::format("'{}' has no attribute {}", object_type_repr(obj), py::repr(name)));
}

// Python's slice.indices(): clamps start/stop for a sequence of length n.
struct SliceBounds {
  int64_t start, stop, step;
};

SliceBounds slice_indices(const Value* start, const Value* stop, const Value* step, int64_t n) {
  auto as_index = [](const Value* v, const char* what) -> std::optional<int64_t> {
    if (!v || v->is_none()) return std::nullopt;
    KS_CHECK(v->is_int() || v->is_bool(), "slice {} must be an integer or None, not {}", what, v->type_name());
    return v->to_int();
  };
  const int64_t st = as_index(step, "step").value_or(1);
  KS_CHECK(st != 0, "slice step cannot be zero");
  auto clamp = [&](std::optional<int64_t> idx, int64_t dflt) {
    if (!idx) return dflt;
    int64_t i = *idx;
    if (i < 0) {
      i += n;
      if (i < 0) i = st < 0 ? -1 : 0;
    } else if (i >= n) {
      i = st < 0 ? n - 1 : n;
    }
    return i;
  };
  return {clamp(as_index(start, "start"), st < 0 ? n - 1 : 0), clamp(as_index(stop, "stop"), st < 0 ? -1 : n), st};
}

template <typename F>
void for_each_slice_index(const SliceBounds& b, F&& f) {
  if (b.step > 0) {
    for (int64_t i = b.start; i < b.stop; i += b.step) f(i);
  } else {
    for (int64_t i = b.start; i > b.stop; i += b.step) f(i);
  }
}

}  // namespace

const Value* Scope::lookup(std::string_view name) const {
  for (const Scope* s = this; s; s = s->parent.get())
    for (const auto& [k, v] : s->vars)
      if (k == name) return &v;
  return nullptr;
}

void Scope::set(std::string_view name, Value v) {
  for (auto& [k, old] : vars) {
    if (k == name) {
      old = std::move(v);
      return;
    }
  }
  vars.emplace_back(std::string(name), std::move(v));
}

std::string Interpreter::render(const Body& body, const ValueDict& context) {
  RenderBudget budget(limits_);
  budget_ = &budget;
  // Namespaces are the only mutable values, so only they can form cycles (ns.self = [ns]) or chains
  // longer than the nesting limit; emptying them all when the render ends frees them without recursion.
  struct ReleaseNamespaces {
    Interpreter& in;
    ~ReleaseNamespaces() {
      for (auto& ns : in.namespaces_) ns->attrs.entries.clear();
      in.namespaces_.clear();
      in.budget_ = nullptr;
      in.out_ = nullptr;
    }
  } release{*this};
  auto globals = std::make_shared<Scope>(nullptr);
  for (auto& [k, v] : make_globals().entries) globals->set(k.as_string(), std::move(v));
  auto top = std::make_shared<Scope>(globals);
  for (const auto& [k, v] : context.entries) {
    KS_CHECK(k.is_string(), "chat template context keys must be strings");
    top->set(k.as_string(), v);
  }
  std::string out;
  out_ = &out;
  exec_body(body, top);
  return out;
}

Value Interpreter::make_namespace(ValueDict attrs) {
  auto ns = std::make_shared<Namespace>();
  ns->type_name = "Namespace";
  ns->attrs = std::move(attrs);
  if (budget_) namespaces_.push_back(ns);
  return Value(std::move(ns));
}

void Interpreter::emit(std::string_view text) {
  budget_->charge_bytes(text.size());
  *out_ += text;
  budget_->check_output(out_->size());
}

Interpreter::Flow Interpreter::exec_body(const Body& body, const ScopePtr& scope) {
  for (const auto& node : body) {
    const Flow f = exec(*node, scope);
    if (f != Flow::Normal) return f;
  }
  return Flow::Normal;
}

std::string Interpreter::render_to_string(const Body& body, const ScopePtr& scope) {
  std::string buf;
  std::string* saved = out_;
  out_ = &buf;
  try {
    exec_body(body, scope);
  } catch (...) {
    out_ = saved;
    throw;
  }
  out_ = saved;
  return buf;
}

Interpreter::Flow Interpreter::exec(const Node& node, const ScopePtr& scope) {
  RenderBudget::Depth depth(*budget_);
  budget_->charge_steps(1);
  try {
    switch (node.kind) {
      case Node::Kind::Text: emit(node.text); return Flow::Normal;
      case Node::Kind::Output: emit(eval(*node.expr, scope).str()); return Flow::Normal;
      case Node::Kind::If:
        for (size_t i = 0; i < node.conditions.size(); ++i)
          if (eval(*node.conditions[i], scope).truthy()) return exec_body(node.bodies[i], scope);
        return exec_body(node.else_body, scope);
      case Node::Kind::For: return exec_for(node, scope);
      case Node::Kind::Set: exec_set(node, scope); return Flow::Normal;
      case Node::Kind::SetBlock: {
        Value v(render_to_string(node.body, scope));
        if (node.expr) v = apply_filter_chain(*node.expr, v, scope);
        scope->set(node.targets[0], std::move(v));
        return Flow::Normal;
      }
      case Node::Kind::Macro: scope->set(node.text, make_macro(node, scope)); return Flow::Normal;
      case Node::Kind::Break: return Flow::Break;
      case Node::Kind::Continue: return Flow::Continue;
      case Node::Kind::With: {
        auto inner = std::make_shared<Scope>(scope);
        for (const auto& [name, expr] : node.assignments) inner->set(name, eval(*expr, scope));
        return exec_body(node.body, inner);
      }
      case Node::Kind::FilterBlock:
        emit(apply_filter_chain(*node.expr, Value(render_to_string(node.body, scope)), scope).str());
        return Flow::Normal;
      case Node::Kind::Generation: return exec_body(node.body, scope);
    }
  } catch (const RaisedError&) {
    throw;
  } catch (const LocatedError&) {
    throw;
  } catch (const TemplateBudgetError&) {
    throw;
  } catch (const Error& e) {
    throw LocatedError(fmt::format("chat template error at line {}: {}", node.line, e.what()));
  } catch (const std::bad_alloc&) {
    throw TemplateBudgetError(fmt::format("the chat template ran out of memory at line {}", node.line));
  } catch (const std::exception& e) {
    // Standard-library failures (bad_alloc, length_error, invalid_argument) become template errors too.
    throw LocatedError(fmt::format("chat template error at line {}: {}", node.line, e.what()));
  }
  return Flow::Normal;
}

Interpreter::Flow Interpreter::exec_for(const Node& node, const ScopePtr& scope) {
  const Value iterable = eval(*node.expr, scope);
  ValueList items = iterate(iterable);

  auto bind_targets = [&](Scope& s, const Value& item) {
    if (node.targets.size() == 1) {
      s.set(node.targets[0], item);
      return;
    }
    const ValueList parts = iterate(item);
    KS_CHECK(parts.size() >= node.targets.size(), "not enough values to unpack (expected {}, got {})",
             node.targets.size(), parts.size());
    KS_CHECK(parts.size() <= node.targets.size(), "too many values to unpack (expected {})", node.targets.size());
    for (size_t k = 0; k < parts.size(); ++k) s.set(node.targets[k], parts[k]);
  };

  // The inline "if" filters before iteration, so loop.length and loop.last count kept items only.
  if (node.filter) {
    ValueList kept;
    for (auto& item : items) {
      auto probe = std::make_shared<Scope>(scope);
      bind_targets(*probe, item);
      if (eval(*node.filter, probe).truthy()) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  if (items.empty()) return exec_body(node.else_body, scope);

  const auto n = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < n; ++i) {
    budget_->charge_steps(kLoopIterationSteps);
    auto loop = std::make_shared<Namespace>();
    loop->type_name = "LoopContext";
    auto cycle = std::make_shared<Callable>();
    cycle->name = "cycle";
    cycle->fn = [i](CallArgs& args, Interpreter&) -> Value {
      KS_CHECK(!args.positional.empty(), "no items for cycling given");
      return args.positional[static_cast<size_t>(i) % args.positional.size()];
    };
    // The keys are distinct: append rather than set(), whose scan would charge the budget per key.
    loop->attrs.entries = {
        {Value("index"), Value(i + 1)},
        {Value("index0"), Value(i)},
        {Value("revindex"), Value(n - i)},
        {Value("revindex0"), Value(n - i - 1)},
        {Value("first"), Value(i == 0)},
        {Value("last"), Value(i == n - 1)},
        {Value("length"), Value(n)},
        {Value("depth"), Value(1)},
        {Value("depth0"), Value(0)},
        {Value("previtem"), i > 0 ? items[i - 1] : Value::undefined("there is no previous item")},
        {Value("nextitem"), i + 1 < n ? items[i + 1] : Value::undefined("there is no next item")},
        {Value("cycle"), Value(std::shared_ptr<const Callable>(std::move(cycle)))},
    };

    auto iter_scope = std::make_shared<Scope>(scope);
    bind_targets(*iter_scope, items[i]);
    iter_scope->set("loop", Value(std::move(loop)));
    if (exec_body(node.body, iter_scope) == Flow::Break) break;
  }
  return Flow::Normal;
}

void Interpreter::exec_set(const Node& node, const ScopePtr& scope) {
  Value v = eval(*node.expr, scope);
  if (!node.attr.empty()) {
    const Value* target = scope->lookup(node.targets[0]);
    KS_CHECK(target && target->is_namespace() && target->as_namespace().type_name == "Namespace",
             "cannot assign attribute on non-namespace object");
    target->as_namespace().attrs.set(Value(node.attr), std::move(v));
    return;
  }
  if (node.targets.size() == 1) {
    scope->set(node.targets[0], std::move(v));
    return;
  }
  const ValueList parts = iterate(v);
  KS_CHECK(parts.size() == node.targets.size(), "cannot unpack {} values into {} names", parts.size(),
           node.targets.size());
  for (size_t k = 0; k < parts.size(); ++k) scope->set(node.targets[k], parts[k]);
}

Value Interpreter::make_macro(const Node& node, const ScopePtr& scope) {
  auto macro = std::make_shared<Callable>();
  macro->name = node.text;
  // The closure holds the defining scope: like jinja2, a macro sees that scope's variables as they
  // are when it is called, but not the caller's locals.
  std::weak_ptr<Scope> weak_scope = scope;
  const Node* def = &node;
  macro->fn = [def, weak_scope](CallArgs& args, Interpreter& in) -> Value {
    ScopePtr closure = weak_scope.lock();
    KS_CHECK(closure, "macro '{}' called after its scope ended", def->text);
    KS_CHECK(args.positional.size() <= def->params.size(), "macro '{}' takes not more than {} argument(s)", def->text,
             def->params.size());
    auto local = std::make_shared<Scope>(closure);
    for (size_t k = 0; k < def->params.size(); ++k) {
      const MacroParam& p = def->params[k];
      if (k < args.positional.size()) {
        local->set(p.name, args.positional[k]);
        continue;
      }
      const Value* kw = nullptr;
      for (const auto& [name, v] : args.keyword)
        if (name == p.name) kw = &v;
      if (kw) {
        local->set(p.name, *kw);
      } else if (p.default_value) {
        local->set(p.name, in.eval(*p.default_value, local));
      } else {
        local->set(p.name, Value::undefined(fmt::format("parameter '{}' was not provided", p.name)));
      }
    }
    for (const auto& [name, v] : args.keyword) {
      bool known = false;
      for (const auto& p : def->params) known = known || p.name == name;
      KS_CHECK(known, "macro '{}' takes no keyword argument '{}'", def->text, name);
    }
    KS_CHECK(in.call_depth_ < kMaxCallDepth, "maximum macro recursion depth exceeded");
    ++in.call_depth_;
    std::string result;
    try {
      result = in.render_to_string(def->body, local);
    } catch (...) {
      --in.call_depth_;
      throw;
    }
    --in.call_depth_;
    return Value(std::move(result));
  };
  return Value(std::shared_ptr<const Callable>(std::move(macro)));
}

Value Interpreter::call(const Value& callee, CallArgs& args) {
  if (callee.is_undefined()) raise_undefined(callee);
  KS_CHECK(callee.is_callable(), "'{}' object is not callable", callee.type_name());
  return callee.as_callable().fn(args, *this);
}

Value Interpreter::get_attr(const Value& obj, std::string_view name) {
  switch (obj.kind()) {
    case Value::Kind::Undefined: raise_undefined(obj);
    case Value::Kind::Dict: {
      // Python attribute lookup finds dict methods before keys (message.items is the method).
      Value method = get_method(obj, name);
      if (!method.is_undefined() || !method.undefined_message().empty()) return method;
      if (const Value* v = obj.as_dict().find(name)) return *v;
      return missing_attribute(obj, name);
    }
    case Value::Kind::Namespace: {
      if (const Value* v = obj.as_namespace().attrs.find(name)) return *v;
      return missing_attribute(obj, name);
    }
    case Value::Kind::String:
    case Value::Kind::List: {
      Value method = get_method(obj, name);
      if (!method.is_undefined() || !method.undefined_message().empty()) return method;
      return missing_attribute(obj, name);
    }
    default: return missing_attribute(obj, name);
  }
}

Value Interpreter::get_item(const Value& obj, const Value& key) {
  switch (obj.kind()) {
    case Value::Kind::Undefined: raise_undefined(obj);
    case Value::Kind::Dict:
      if (const Value* v = obj.as_dict().find(key)) return *v;
      break;
    case Value::Kind::List:
    case Value::Kind::String:
      if ((key.is_int() || key.is_bool()) && !obj.is_iterator()) {
        int64_t idx = key.to_int();
        if (obj.is_list()) {
          const auto n = static_cast<int64_t>(obj.as_list().size());
          if (idx < 0) idx += n;
          if (idx >= 0 && idx < n) return obj.as_list()[static_cast<size_t>(idx)];
        } else {
          const std::string& s = obj.as_string();
          const std::vector<size_t> offs = py::code_point_offsets(s);
          const auto n = static_cast<int64_t>(offs.size()) - 1;
          if (idx < 0) idx += n;
          if (idx >= 0 && idx < n) return Value(s.substr(offs[idx], offs[idx + 1] - offs[idx]));
        }
        return Value::undefined(fmt::format("{} has no element {}", object_type_repr(obj), key.to_int()));
      }
      break;
    case Value::Kind::Namespace: break;
    default: break;
  }
  // jinja2 falls back to attribute lookup for string keys (obj['items'] finds the method).
  if (key.is_string()) return get_attr(obj, key.as_string());
  return Value::undefined(fmt::format("{} has no element {}", object_type_repr(obj), key.repr()));
}

CallArgs Interpreter::eval_args(const Expr& e, const ScopePtr& scope, size_t first_child) {
  CallArgs args;
  for (size_t k = first_child; k < e.children.size(); ++k) args.positional.push_back(eval(*e.children[k], scope));
  for (const auto& [name, expr] : e.keyword) args.keyword.emplace_back(name, eval(*expr, scope));
  return args;
}

Value Interpreter::apply_filter_chain(const Expr& chain, const Value& input, const ScopePtr& scope) {
  if (chain.kind != Expr::Kind::Filter) return input;
  Value operand = apply_filter_chain(*chain.children[0], input, scope);
  CallArgs args = eval_args(chain, scope, 1);
  return apply_filter(*this, chain.name, operand, args);
}

Value Interpreter::eval(const Expr& e, const ScopePtr& scope) {
  RenderBudget::Depth depth(*budget_);
  budget_->charge_steps(1);
  Value v = eval_expr(e, scope);
  account(v, e.kind);
  return v;
}

void Interpreter::account(const Value& v, Expr::Kind made_by) {
  // Strings are copied by every lookup, so each result costs its bytes. A list or dict that is only
  // looked up is shared, not copied; one that an operation made cost its items when it was made.
  if (v.is_string()) {
    budget_->check_string(v.as_string().size());
    budget_->charge_bytes(v.as_string().size());
    return;
  }
  const bool made = made_by == Expr::Kind::Call || made_by == Expr::Kind::Filter || made_by == Expr::Kind::Binary ||
                    made_by == Expr::Kind::Slice;
  size_t items = 0;
  if (v.is_list())
    items = v.as_list().size();
  else if (v.is_dict())
    items = v.as_dict().entries.size();
  else
    return;
  budget_->check_items(items);
  if (made) budget_->charge_bytes(items * sizeof(Value));
}

Value Interpreter::eval_expr(const Expr& e, const ScopePtr& scope) {
  switch (e.kind) {
    case Expr::Kind::Literal: return e.value;
    case Expr::Kind::Name: {
      if (const Value* v = scope->lookup(e.name)) return *v;
      return Value::undefined(fmt::format("{} is undefined", py::repr(e.name)));
    }
    case Expr::Kind::List:
    case Expr::Kind::Tuple: {
      ValueList items;
      items.reserve(e.children.size());
      for (const auto& c : e.children) items.push_back(eval(*c, scope));
      return Value(std::move(items), e.kind == Expr::Kind::Tuple ? Value::Seq::Tuple : Value::Seq::List);
    }
    case Expr::Kind::Dict: {
      ValueDict dict;
      for (size_t k = 0; k + 1 < e.children.size(); k += 2) {
        Value key = eval(*e.children[k], scope);
        KS_CHECK(!key.is_list() && !key.is_dict() && !key.is_namespace(), "unhashable type: '{}'", key.type_name());
        dict.set(std::move(key), eval(*e.children[k + 1], scope));
      }
      return Value(std::move(dict));
    }
    case Expr::Kind::GetAttr: return get_attr(eval(*e.children[0], scope), e.name);
    case Expr::Kind::GetItem: return get_item(eval(*e.children[0], scope), eval(*e.children[1], scope));
    case Expr::Kind::Slice: return eval_slice(e, scope);
    case Expr::Kind::Call: {
      const Value callee = eval(*e.children[0], scope);
      CallArgs args = eval_args(e, scope, 1);
      return call(callee, args);
    }
    case Expr::Kind::Filter: {
      const Value operand = eval(*e.children[0], scope);
      CallArgs args = eval_args(e, scope, 1);
      return apply_filter(*this, e.name, operand, args);
    }
    case Expr::Kind::Test: {
      const Value operand = eval(*e.children[0], scope);
      CallArgs args = eval_args(e, scope, 1);
      return Value(apply_test(*this, e.name, operand, args) != e.negated);
    }
    case Expr::Kind::Unary: {
      const Value v = eval(*e.children[0], scope);
      if (e.name == "not") return Value(!v.truthy());
      if (v.is_undefined()) raise_undefined(v);
      KS_CHECK(v.is_number(), "bad operand type for unary {}: '{}'", e.name, v.type_name());
      if (e.name == "+") return v.is_bool() ? Value(v.to_int()) : v;
      if (v.is_float()) return Value(-v.as_float());
      KS_CHECK(v.to_int() != INT64_MIN, "integer overflow");
      return Value(-v.to_int());
    }
    case Expr::Kind::Binary: return binary_op(e.name, eval(*e.children[0], scope), eval(*e.children[1], scope));
    case Expr::Kind::And: {
      Value a = eval(*e.children[0], scope);
      return a.truthy() ? eval(*e.children[1], scope) : a;
    }
    case Expr::Kind::Or: {
      Value a = eval(*e.children[0], scope);
      return a.truthy() ? a : eval(*e.children[1], scope);
    }
    case Expr::Kind::Compare: return eval_compare(e, scope);
    case Expr::Kind::Condition:
      if (eval(*e.children[0], scope).truthy()) return eval(*e.children[1], scope);
      if (e.children[2]) return eval(*e.children[2], scope);
      return Value::undefined(fmt::format(
          "the inline if-expression on line {} evaluated to false and no else section was defined.", e.line));
  }
  return Value();
}

Value Interpreter::eval_compare(const Expr& e, const ScopePtr& scope) {
  Value left = eval(*e.children[0], scope);
  for (size_t k = 0; k < e.ops.size(); ++k) {
    Value right = eval(*e.children[k + 1], scope);
    const std::string& op = e.ops[k];
    bool ok;
    if (op == "==")
      ok = left.equals(right);
    else if (op == "!=")
      ok = !left.equals(right);
    else if (op == "<")
      ok = less_than(left, right, op);
    else if (op == ">")
      ok = less_than(right, left, op);
    else if (op == "<=")
      ok = !less_than(right, left, op);
    else if (op == ">=")
      ok = !less_than(left, right, op);
    else if (op == "in")
      ok = contains(right, left);
    else
      ok = !contains(right, left);
    if (!ok) return Value(false);
    left = std::move(right);
  }
  return Value(true);
}

Value Interpreter::eval_slice(const Expr& e, const ScopePtr& scope) {
  const Value obj = eval(*e.children[0], scope);
  if (obj.is_undefined()) raise_undefined(obj);
  Value parts[3];
  for (int k = 0; k < 3; ++k)
    if (e.children[k + 1]) parts[k] = eval(*e.children[k + 1], scope);
  auto ptr = [&](int k) { return e.children[k + 1] ? &parts[k] : nullptr; };
  if (obj.is_list() && !obj.is_iterator()) {
    const ValueList& list = obj.as_list();
    const SliceBounds b = slice_indices(ptr(0), ptr(1), ptr(2), static_cast<int64_t>(list.size()));
    ValueList out;
    for_each_slice_index(b, [&](int64_t i) { out.push_back(list[static_cast<size_t>(i)]); });
    return Value(std::move(out), obj.seq());
  }
  if (obj.is_string()) {
    const std::string& s = obj.as_string();
    const std::vector<size_t> offs = py::code_point_offsets(s);
    const SliceBounds b = slice_indices(ptr(0), ptr(1), ptr(2), static_cast<int64_t>(offs.size()) - 1);
    std::string out;
    for_each_slice_index(b, [&](int64_t i) { out.append(s, offs[i], offs[i + 1] - offs[i]); });
    return Value(std::move(out));
  }
  return Value::undefined(fmt::format("{} is not subscriptable by a slice", object_type_repr(obj)));
}

}  // namespace kestrel::chat_template
