#include "tokenizer/chat_template/parser.h"

#include <algorithm>
#include <initializer_list>

#include "core/error.h"
#include "tokenizer/chat_template/builtins.h"
#include "tokenizer/chat_template/lexer.h"

namespace kestrel::chat_template {
namespace {

// Deep nesting is legal Jinja but would exhaust the native stack; no real template comes close.
constexpr int kMaxDepth = 200;

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : toks_(std::move(tokens)) {}

  Body parse() {
    Body body = subparse({});
    if (cur().kind != TokenKind::Eof) fail(fmt::format("unexpected tag '{}'", cur().text));
    return body;
  }

 private:
  std::vector<Token> toks_;
  size_t i_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
  // jinja2 rejects unknown filters and tests when compiling, except inside "if" blocks and inline
  // if-expressions, where it defers the error to the render that reaches them.
  int soft_depth_ = 0;
  std::vector<std::pair<Token, std::string>> unknown_names_;

  void check_unknown_names() {
    if (soft_depth_ == 0 && !unknown_names_.empty())
      fail_at(unknown_names_.front().first, unknown_names_.front().second);
    unknown_names_.clear();
  }

  struct DepthGuard {
    Parser& p;
    explicit DepthGuard(Parser& parser) : p(parser) {
      if (++p.depth_ > kMaxDepth) p.fail("template nested too deeply");
    }
    ~DepthGuard() { --p.depth_; }
  };

  const Token& cur() const { return toks_[i_]; }
  const Token& peek(size_t n = 1) const { return toks_[std::min(i_ + n, toks_.size() - 1)]; }
  const Token& next() {
    const Token& t = toks_[i_];
    if (i_ + 1 < toks_.size()) ++i_;
    return t;
  }

  [[noreturn]] void fail(std::string_view what) const { fail_at(cur(), what); }
  [[noreturn]] static void fail_at(const Token& t, std::string_view what) {
    KS_FAIL("chat template syntax error at line {}, column {}: {}", t.line, t.column, what);
  }

  static std::string describe(const Token& t) {
    switch (t.kind) {
      case TokenKind::Eof: return "end of template";
      case TokenKind::VarEnd: return "end of print statement";
      case TokenKind::BlockEnd: return "end of statement block";
      case TokenKind::VarBegin: return "begin of print statement";
      case TokenKind::BlockBegin: return "begin of statement block";
      case TokenKind::Text: return "template data";
      case TokenKind::String: return "string";
      case TokenKind::Int:
      case TokenKind::Float: return "number";
      default: return "'" + t.text + "'";
    }
  }

  bool is_op(std::string_view op) const { return cur().kind == TokenKind::Op && cur().text == op; }
  bool is_name(std::string_view name) const { return cur().kind == TokenKind::Name && cur().text == name; }
  bool skip_op(std::string_view op) {
    if (!is_op(op)) return false;
    next();
    return true;
  }
  bool skip_name(std::string_view name) {
    if (!is_name(name)) return false;
    next();
    return true;
  }
  void expect_op(std::string_view op) {
    if (!skip_op(op)) fail(fmt::format("expected '{}', got {}", op, describe(cur())));
  }
  std::string expect_name() {
    if (cur().kind != TokenKind::Name) fail(fmt::format("expected a name, got {}", describe(cur())));
    return next().text;
  }
  void expect_block_end() {
    if (cur().kind != TokenKind::BlockEnd)
      fail(fmt::format("expected end of statement block, got {}", describe(cur())));
    check_unknown_names();
    next();
  }

  // Parses nodes until a {% tag %} named in end_tags (left as the current token) or the end.
  Body subparse(std::initializer_list<std::string_view> end_tags) {
    Body body;
    while (true) {
      const Token& t = cur();
      if (t.kind == TokenKind::Eof) {
        if (end_tags.size() != 0) fail(fmt::format("unexpected end of template, expected '{}'", *end_tags.begin()));
        return body;
      }
      if (t.kind == TokenKind::Text) {
        auto node = std::make_unique<Node>(Node::Kind::Text, t.line);
        node->text = t.text;
        body.push_back(std::move(node));
        next();
      } else if (t.kind == TokenKind::VarBegin) {
        next();
        auto node = std::make_unique<Node>(Node::Kind::Output, t.line);
        node->expr = parse_tuple(true);
        if (cur().kind != TokenKind::VarEnd)
          fail(fmt::format("expected end of print statement, got {}", describe(cur())));
        check_unknown_names();
        next();
        body.push_back(std::move(node));
      } else if (t.kind == TokenKind::BlockBegin) {
        const Token& tag = peek();
        if (tag.kind == TokenKind::Name &&
            std::find(end_tags.begin(), end_tags.end(), std::string_view(tag.text)) != end_tags.end()) {
          next();
          return body;
        }
        next();
        body.push_back(parse_statement());
      } else {
        fail(fmt::format("unexpected {}", describe(t)));
      }
    }
  }

  NodePtr parse_statement() {
    DepthGuard guard(*this);
    const Token& t = cur();
    if (t.kind != TokenKind::Name) fail("tag name expected");
    const std::string& tag = t.text;
    if (tag == "if") return parse_if();
    if (tag == "for") return parse_for();
    if (tag == "set") return parse_set();
    if (tag == "macro") return parse_macro();
    if (tag == "with") return parse_with();
    if (tag == "filter") return parse_filter_block();
    if (tag == "generation") return parse_generation();
    if (tag == "break" || tag == "continue") {
      if (loop_depth_ == 0) fail(fmt::format("'{}' outside loop", tag));
      auto node = std::make_unique<Node>(tag == "break" ? Node::Kind::Break : Node::Kind::Continue, t.line);
      next();
      expect_block_end();
      return node;
    }
    static constexpr std::string_view unsupported[] = {"include", "import", "from", "extends", "block", "call", "do"};
    if (std::find(std::begin(unsupported), std::end(unsupported), tag) != std::end(unsupported))
      fail(fmt::format("tag '{}' is not supported in chat templates", tag));
    fail(fmt::format("Encountered unknown tag '{}'", tag));
  }

  NodePtr parse_if() {
    auto node = std::make_unique<Node>(Node::Kind::If, next().line);
    ++soft_depth_;
    while (true) {
      node->conditions.push_back(parse_tuple(true));
      expect_block_end();
      node->bodies.push_back(subparse({"elif", "else", "endif"}));
      const std::string tag = next().text;
      if (tag == "elif") continue;
      if (tag == "else") {
        expect_block_end();
        node->else_body = subparse({"endif"});
        next();
      }
      --soft_depth_;
      expect_block_end();
      return node;
    }
  }

  std::vector<std::string> parse_targets() {
    std::vector<std::string> targets;
    const bool paren = skip_op("(");
    do {
      if (paren && is_op(")")) break;
      targets.push_back(expect_name());
    } while (skip_op(","));
    if (paren) expect_op(")");
    return targets;
  }

  NodePtr parse_for() {
    auto node = std::make_unique<Node>(Node::Kind::For, next().line);
    node->targets = parse_targets();
    if (!skip_name("in")) fail("expected 'in' in for loop");
    node->expr = parse_tuple(false);
    if (skip_name("if")) node->filter = parse_expression(true);
    if (is_name("recursive")) fail("recursive loops are not supported");
    expect_block_end();
    ++loop_depth_;
    node->body = subparse({"endfor", "else"});
    --loop_depth_;
    if (next().text == "else") {
      expect_block_end();
      node->else_body = subparse({"endfor"});
      next();
    }
    expect_block_end();
    return node;
  }

  NodePtr parse_set() {
    const int line = next().line;
    std::vector<std::string> targets;
    std::string attr;
    targets.push_back(expect_name());
    if (skip_op(".")) {
      attr = expect_name();
    } else {
      while (skip_op(",")) {
        if (is_op("=")) break;
        targets.push_back(expect_name());
      }
    }
    if (skip_op("=")) {
      auto node = std::make_unique<Node>(Node::Kind::Set, line);
      node->targets = std::move(targets);
      node->attr = std::move(attr);
      node->expr = parse_tuple(true);
      expect_block_end();
      return node;
    }
    if (targets.size() != 1 || !attr.empty()) fail("block assignment needs a single plain name");
    auto node = std::make_unique<Node>(Node::Kind::SetBlock, line);
    node->targets = std::move(targets);
    if (is_op("|")) node->expr = parse_filter_chain();
    expect_block_end();
    node->body = subparse({"endset"});
    next();
    expect_block_end();
    return node;
  }

  NodePtr parse_macro() {
    auto node = std::make_unique<Node>(Node::Kind::Macro, next().line);
    node->text = expect_name();
    expect_op("(");
    while (!is_op(")")) {
      if (!node->params.empty()) expect_op(",");
      if (is_op(")")) break;
      MacroParam p;
      p.name = expect_name();
      if (skip_op("="))
        p.default_value = parse_expression(true);
      else if (!node->params.empty() && node->params.back().default_value)
        fail("non-default argument follows default argument");
      node->params.push_back(std::move(p));
    }
    next();
    expect_block_end();
    const int saved_loop_depth = loop_depth_;
    loop_depth_ = 0;
    node->body = subparse({"endmacro"});
    loop_depth_ = saved_loop_depth;
    next();
    if (cur().kind == TokenKind::Name) next();  // optional macro name after endmacro
    expect_block_end();
    return node;
  }

  NodePtr parse_with() {
    auto node = std::make_unique<Node>(Node::Kind::With, next().line);
    while (cur().kind != TokenKind::BlockEnd) {
      if (!node->assignments.empty()) expect_op(",");
      std::string name = expect_name();
      expect_op("=");
      node->assignments.emplace_back(std::move(name), parse_expression(true));
    }
    expect_block_end();
    node->body = subparse({"endwith"});
    next();
    expect_block_end();
    return node;
  }

  NodePtr parse_filter_block() {
    auto node = std::make_unique<Node>(Node::Kind::FilterBlock, next().line);
    node->expr = parse_filter_chain(/*leading_pipe=*/false);
    expect_block_end();
    node->body = subparse({"endfilter"});
    next();
    expect_block_end();
    return node;
  }

  NodePtr parse_generation() {
    auto node = std::make_unique<Node>(Node::Kind::Generation, next().line);
    expect_block_end();
    node->body = subparse({"endgeneration"});
    next();
    expect_block_end();
    return node;
  }

  // A filter chain applied to a placeholder (an undefined literal) that the interpreter replaces
  // with the block's rendered body.
  ExprPtr parse_filter_chain(bool leading_pipe = true) {
    ExprPtr node = std::make_unique<Expr>(Expr::Kind::Literal, cur().line);
    if (leading_pipe) expect_op("|");
    node = parse_filter(std::move(node));
    while (skip_op("|")) node = parse_filter(std::move(node));
    return node;
  }

  // ---- expressions ----

  ExprPtr parse_tuple(bool with_condexpr) {
    const int line = cur().line;
    ExprPtr first = parse_expression(with_condexpr);
    if (!is_op(",")) return first;
    auto tuple = std::make_unique<Expr>(Expr::Kind::Tuple, line);
    tuple->children.push_back(std::move(first));
    while (skip_op(",")) {
      if (!starts_expression()) break;
      tuple->children.push_back(parse_expression(with_condexpr));
    }
    return tuple;
  }

  bool starts_expression() const {
    const Token& t = cur();
    if (t.kind == TokenKind::Name) return t.text != "in" && t.text != "if";
    if (t.kind == TokenKind::String || t.kind == TokenKind::Int || t.kind == TokenKind::Float) return true;
    return t.kind == TokenKind::Op &&
           (t.text == "(" || t.text == "[" || t.text == "{" || t.text == "-" || t.text == "+");
  }

  ExprPtr parse_expression(bool with_condexpr) {
    DepthGuard guard(*this);
    return with_condexpr ? parse_condexpr() : parse_or();
  }

  ExprPtr parse_condexpr() {
    const size_t unknown_mark = unknown_names_.size();
    ExprPtr expr = parse_or();
    if (is_name("if")) unknown_names_.resize(std::min(unknown_mark, unknown_names_.size()));
    while (is_name("if")) {
      const int line = next().line;
      auto cond = std::make_unique<Expr>(Expr::Kind::Condition, line);
      cond->children.push_back(parse_or());
      cond->children.push_back(std::move(expr));
      cond->children.push_back(skip_name("else") ? parse_condexpr() : nullptr);
      expr = std::move(cond);
    }
    return expr;
  }

  ExprPtr binary(Expr::Kind kind, std::string op, ExprPtr a, ExprPtr b, int line) {
    auto e = std::make_unique<Expr>(kind, line);
    e->name = std::move(op);
    e->children.push_back(std::move(a));
    e->children.push_back(std::move(b));
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (is_name("or")) {
      const int line = next().line;
      left = binary(Expr::Kind::Or, "or", std::move(left), parse_and(), line);
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (is_name("and")) {
      const int line = next().line;
      left = binary(Expr::Kind::And, "and", std::move(left), parse_not(), line);
    }
    return left;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      DepthGuard guard(*this);
      auto e = std::make_unique<Expr>(Expr::Kind::Unary, next().line);
      e->name = "not";
      e->children.push_back(parse_not());
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const int line = cur().line;
    ExprPtr first = parse_math1();
    std::unique_ptr<Expr> cmp;
    while (true) {
      std::string op;
      if (cur().kind == TokenKind::Op && (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
                                          cur().text == "<=" || cur().text == ">" || cur().text == ">=")) {
        op = next().text;
      } else if (is_name("in")) {
        next();
        op = "in";
      } else if (is_name("not") && peek().kind == TokenKind::Name && peek().text == "in") {
        next();
        next();
        op = "not in";
      } else {
        break;
      }
      if (!cmp) {
        cmp = std::make_unique<Expr>(Expr::Kind::Compare, line);
        cmp->children.push_back(std::move(first));
      }
      cmp->ops.push_back(std::move(op));
      cmp->children.push_back(parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(first);
  }

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Token& t = next();
      left = binary(Expr::Kind::Binary, t.text, std::move(left), parse_concat(), t.line);
    }
    return left;
  }

  ExprPtr parse_concat() {
    ExprPtr left = parse_math2();
    while (is_op("~")) {
      const int line = next().line;
      left = binary(Expr::Kind::Binary, "~", std::move(left), parse_math2(), line);
    }
    return left;
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& t = next();
      left = binary(Expr::Kind::Binary, t.text, std::move(left), parse_pow(), t.line);
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (is_op("**")) {
      const int line = next().line;
      left = binary(Expr::Kind::Binary, "**", std::move(left), parse_unary(true), line);
    }
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(*this);
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      const Token& t = next();
      node = std::make_unique<Expr>(Expr::Kind::Unary, t.line);
      node->name = t.text;
      node->children.push_back(parse_unary(false));
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr literal(Value v, int line) {
    auto e = std::make_unique<Expr>(Expr::Kind::Literal, line);
    e->value = std::move(v);
    return e;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    switch (t.kind) {
      case TokenKind::Name: {
        next();
        if (t.text == "true" || t.text == "True") return literal(Value(true), t.line);
        if (t.text == "false" || t.text == "False") return literal(Value(false), t.line);
        if (t.text == "none" || t.text == "None") return literal(Value::none(), t.line);
        auto e = std::make_unique<Expr>(Expr::Kind::Name, t.line);
        e->name = t.text;
        return e;
      }
      case TokenKind::String: {
        std::string s = next().text;
        while (cur().kind == TokenKind::String) s += next().text;  // adjacent literals concatenate
        return literal(Value(std::move(s)), t.line);
      }
      case TokenKind::Int: next(); return literal(Value(t.int_value), t.line);
      case TokenKind::Float: next(); return literal(Value(t.float_value), t.line);
      case TokenKind::Op:
        if (t.text == "(") return parse_paren();
        if (t.text == "[") return parse_list();
        if (t.text == "{") return parse_dict();
        break;
      default: break;
    }
    fail(fmt::format("unexpected {}", describe(t)));
  }

  ExprPtr parse_paren() {
    const int line = next().line;
    if (skip_op(")")) return std::make_unique<Expr>(Expr::Kind::Tuple, line);
    ExprPtr first = parse_expression(true);
    if (skip_op(")")) return first;
    auto tuple = std::make_unique<Expr>(Expr::Kind::Tuple, line);
    tuple->children.push_back(std::move(first));
    while (skip_op(",")) {
      if (is_op(")")) break;
      tuple->children.push_back(parse_expression(true));
    }
    expect_op(")");
    return tuple;
  }

  ExprPtr parse_list() {
    auto list = std::make_unique<Expr>(Expr::Kind::List, next().line);
    while (!is_op("]")) {
      if (!list->children.empty()) expect_op(",");
      if (is_op("]")) break;
      list->children.push_back(parse_expression(true));
    }
    next();
    return list;
  }

  ExprPtr parse_dict() {
    auto dict = std::make_unique<Expr>(Expr::Kind::Dict, next().line);
    while (!is_op("}")) {
      if (!dict->children.empty()) expect_op(",");
      if (is_op("}")) break;
      dict->children.push_back(parse_expression(true));
      expect_op(":");
      dict->children.push_back(parse_expression(true));
    }
    next();
    return dict;
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      if (is_op(".")) {
        const int line = next().line;
        if (cur().kind == TokenKind::Int) {
          auto e = std::make_unique<Expr>(Expr::Kind::GetItem, line);
          e->children.push_back(std::move(node));
          e->children.push_back(literal(Value(next().int_value), line));
          node = std::move(e);
        } else {
          auto e = std::make_unique<Expr>(Expr::Kind::GetAttr, line);
          e->name = expect_name();
          e->children.push_back(std::move(node));
          node = std::move(e);
        }
      } else if (is_op("[")) {
        node = parse_subscript(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr node) {
    const int line = next().line;
    ExprPtr parts[3];
    bool is_slice = false;
    if (!is_op(":")) parts[0] = parse_expression(true);
    if (skip_op(":")) {
      is_slice = true;
      if (!is_op(":") && !is_op("]")) parts[1] = parse_expression(true);
      if (skip_op(":") && !is_op("]")) parts[2] = parse_expression(true);
    }
    expect_op("]");
    auto e = std::make_unique<Expr>(is_slice ? Expr::Kind::Slice : Expr::Kind::GetItem, line);
    e->children.push_back(std::move(node));
    if (is_slice) {
      for (auto& p : parts) e->children.push_back(std::move(p));
    } else {
      e->children.push_back(std::move(parts[0]));
    }
    return e;
  }

  void parse_call_args(Expr& call) {
    expect_op("(");
    bool first = true;
    while (!is_op(")")) {
      if (!first) expect_op(",");
      first = false;
      if (is_op(")")) break;
      if (is_op("*") || is_op("**")) fail("*args and **kwargs are not supported");
      if (cur().kind == TokenKind::Name && peek().kind == TokenKind::Op && peek().text == "=") {
        std::string key = next().text;
        next();
        call.keyword.emplace_back(std::move(key), parse_expression(true));
      } else {
        if (!call.keyword.empty()) fail("positional argument follows keyword argument");
        call.children.push_back(parse_expression(true));
      }
    }
    next();
  }

  ExprPtr parse_call(ExprPtr callee) {
    auto call = std::make_unique<Expr>(Expr::Kind::Call, cur().line);
    call->children.push_back(std::move(callee));
    parse_call_args(*call);
    return call;
  }

  ExprPtr parse_filter(ExprPtr operand) {
    auto f = std::make_unique<Expr>(Expr::Kind::Filter, cur().line);
    const Token name_token = cur();
    f->name = expect_name();
    if (!is_filter_name(f->name))
      unknown_names_.emplace_back(name_token, fmt::format("No filter named '{}'.", f->name));
    f->children.push_back(std::move(operand));
    if (is_op("(")) parse_call_args(*f);
    return f;
  }

  ExprPtr parse_test(ExprPtr operand) {
    auto t = std::make_unique<Expr>(Expr::Kind::Test, cur().line);
    t->negated = skip_name("not");
    const Token name_token = cur();
    t->name = expect_name();
    if (!is_test_name(t->name)) unknown_names_.emplace_back(name_token, fmt::format("No test named '{}'.", t->name));
    t->children.push_back(std::move(operand));
    if (is_op("(")) {
      parse_call_args(*t);
    } else if ((cur().kind == TokenKind::Name || cur().kind == TokenKind::String || cur().kind == TokenKind::Int ||
                cur().kind == TokenKind::Float || is_op("[") || is_op("{")) &&
               !is_name("else") && !is_name("or") && !is_name("and") && !is_name("if")) {
      if (is_name("is")) fail("You cannot chain multiple tests with is");
      t->children.push_back(parse_postfix(parse_primary()));
    }
    return t;
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      if (skip_op("|")) {
        node = parse_filter(std::move(node));
      } else if (skip_name("is")) {
        node = parse_test(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }
};

}  // namespace

Body parse_template(std::string_view source) {
  return Parser(tokenize(source)).parse();
}

}  // namespace kestrel::chat_template
