// jinja2's built-in filters, tests and global functions, Hugging Face's additions (tojson with
// json.dumps options, raise_exception, strftime_now), Python operators and the methods of str,
// dict and list that templates call.
#pragma once

#include <string_view>

#include "tokenizer/chat_template/value.h"

namespace kestrel::chat_template {

class Interpreter;

// Throw kestrel::Error for unknown names and bad arguments.
Value apply_filter(Interpreter& in, std::string_view name, const Value& operand, CallArgs& args);
bool apply_test(Interpreter& in, std::string_view name, const Value& operand, CallArgs& args);

bool is_filter_name(std::string_view name);
bool is_test_name(std::string_view name);

// The global functions every template sees (range, namespace, dict, raise_exception, strftime_now).
ValueDict make_globals();

// A bound method of a str, dict or list value. Mutating methods come back as an undefined that
// reports the sandbox violation, as jinja2's ImmutableSandboxedEnvironment does; an unknown name
// comes back as an undefined with an empty message.
Value get_method(const Value& obj, std::string_view name);

// Python binary operators: + - * / // % ** and jinja2's ~.
Value binary_op(std::string_view op, const Value& a, const Value& b);
// Python <, <=, >, >= (== and != use Value::equals).
bool less_than(const Value& a, const Value& b, std::string_view op_for_error);
// Python "a in b".
bool contains(const Value& container, const Value& item);
// The items a for loop or filter iterates: list items, dict keys, string characters, nothing for
// undefined. Throws for non-iterables.
ValueList iterate(const Value& v);

// Raises the UndefinedError message of an undefined value.
[[noreturn]] void raise_undefined(const Value& v);

}  // namespace kestrel::chat_template
