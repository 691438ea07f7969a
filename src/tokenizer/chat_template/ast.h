// Syntax tree of a parsed chat template: expressions and statements, each with its source line so
// runtime errors can say where they happened.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/chat_template/value.h"

namespace kestrel::chat_template {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    Literal,    // value
    Name,       // name
    List,       // children: items
    Tuple,      // children: items
    Dict,       // children: key0, value0, key1, value1, ...
    GetAttr,    // children[0].name
    GetItem,    // children[0][children[1]]
    Slice,      // children[0][children[1]:children[2]:children[3]] (null when omitted)
    Call,       // children[0](children[1..], keyword)
    Filter,     // children[0] | name(children[1..], keyword)
    Test,       // children[0] is [not] name(children[1..], keyword)
    Unary,      // op children[0]; op is "-", "+" or "not"
    Binary,     // children[0] op children[1]; op is an arithmetic operator or "~"
    And,        // children[0] and children[1]
    Or,         // children[0] or children[1]
    Compare,    // children[0] ops[0] children[1] ops[1] children[2] ... (Python chaining)
    Condition,  // children[1] if children[0] else children[2] (children[2] null: undefined)
  };

  Kind kind;
  int line = 0;
  Value value;
  std::string name;  // also the operator of Unary/Binary
  std::vector<std::string> ops;
  std::vector<ExprPtr> children;
  std::vector<std::pair<std::string, ExprPtr>> keyword;
  bool negated = false;

  Expr(Kind k, int l) : kind(k), line(l) {}
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

struct MacroParam {
  std::string name;
  ExprPtr default_value;  // null: required (undefined when missing)
};

struct Node {
  enum class Kind {
    Text,      // text
    Output,    // {{ expr }}
    If,        // conditions[i] -> bodies[i]; else_body
    For,       // targets in expr [if filter]: body; else_body
    Set,       // targets (or target.attr) = expr
    SetBlock,  // {% set target | filters %}body{% endset %}: filter is the chain applied to the body
    Macro,     // name(params): body
    Break,
    Continue,
    With,         // assignments then body in a fresh scope
    FilterBlock,  // {% filter f %}body{% endfilter %}
    Generation,   // {% generation %}body{% endgeneration %} (Hugging Face's assistant-mask marker)
  };

  Kind kind;
  int line = 0;
  std::string text;
  ExprPtr expr;    // Output value, For iterable, Set value, SetBlock/FilterBlock filter chain
  ExprPtr filter;  // For: inline "if" condition
  std::vector<std::string> targets;
  std::string attr;  // Set: "ns.attr = ..." assigns attribute attr of targets[0]
  std::vector<ExprPtr> conditions;
  std::vector<Body> bodies;
  Body body;
  Body else_body;
  std::vector<MacroParam> params;
  std::vector<std::pair<std::string, ExprPtr>> assignments;  // With

  Node(Kind k, int l) : kind(k), line(l) {}
};

}  // namespace kestrel::chat_template
