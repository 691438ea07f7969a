// Python str semantics over UTF-8 std::string: lengths, indices and slices count code points,
// whitespace is Python's str.isspace(), and case mapping covers ASCII, Latin-1, Latin Extended-A,
// Greek, Cyrillic and fullwidth Latin (the scripts chat templates meet; other letters are left as is).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/utf8.h"

namespace kestrel::chat_template::py {

// Decodes the code point at s[i] and advances i; an invalid byte decodes as itself (one code point),
// so malformed input never reads out of bounds.
uint32_t next_code_point(std::string_view s, size_t& i);
using kestrel::append_utf8;  // core/utf8.h

bool is_space(uint32_t cp);
bool is_printable(uint32_t cp);

size_t length(std::string_view s);
// Byte offsets of each code point plus a final s.size(): offsets[k] is where code point k starts.
std::vector<size_t> code_point_offsets(std::string_view s);

// chars unset: strip Python whitespace; otherwise strip any code point that occurs in chars.
std::string strip(std::string_view s, const std::optional<std::string>& chars, bool left, bool right);
// Python str.split / str.rsplit (sep unset: split on whitespace runs, dropping empty parts).
std::vector<std::string> split(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit);
std::vector<std::string> rsplit(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit);
std::vector<std::string> splitlines(std::string_view s, bool keepends);
std::string replace(std::string_view s, std::string_view old, std::string_view repl, int64_t count);
// std::string_view::find and rfind that charge the render budget for the bytes they scan (the search
// is quadratic in the worst case, so long needles cost more).
size_t find_bytes(std::string_view s, std::string_view sub, size_t from = 0);
size_t rfind_bytes(std::string_view s, std::string_view sub, size_t from = std::string_view::npos);
// Python str.count / str.find on code points (returns code point index, -1 when absent).
int64_t count(std::string_view s, std::string_view sub);
int64_t find(std::string_view s, std::string_view sub, bool reverse);

std::string upper(std::string_view s);
std::string lower(std::string_view s);
std::string swapcase(std::string_view s);
// Python str.title(): a cased letter after an uncased character starts a word.
std::string title(std::string_view s);
// Python str.capitalize(): first code point upper case, the rest lower case.
std::string capitalize(std::string_view s);
bool is_upper_letter(uint32_t cp);
bool is_lower_letter(uint32_t cp);
uint32_t to_upper(uint32_t cp);
uint32_t to_lower(uint32_t cp);

// Python repr() of a str: quotes chosen as Python does, non-printable characters escaped.
std::string repr(std::string_view s);

}  // namespace kestrel::chat_template::py
