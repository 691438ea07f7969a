// Recursive-descent parser for the jinja2 subset chat templates use; precedence and the grammar's
// corner cases (filters binding tighter than arithmetic, "is" tests with a bare argument, loop
// filters, tuple targets) follow jinja2's own parser.
#pragma once

#include <string_view>

#include "tokenizer/chat_template/ast.h"

namespace kestrel::chat_template {

// Throws kestrel::Error with line and column on a syntax error.
Body parse_template(std::string_view source);

}  // namespace kestrel::chat_template
