// "Did you mean" for the command line: the closest known name to a mistyped one.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kestrel::cli {

// The candidate within a few edits of `typed` (case-sensitive Levenshtein distance: 2, or a third of its
// length, at most 3), or "" when none is that close.
std::string closest_name(std::string_view typed, const std::vector<std::string>& candidates);

}  // namespace kestrel::cli
