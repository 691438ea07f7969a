#include "tokenizer/bert_unicode.h"

#include <utf8proc.h>

#include <algorithm>
#include <iterator>
#include <span>

namespace kestrel::bert_unicode {
namespace {

struct CodePointRange {
  char32_t first, last;
};

struct LowercaseException {
  char32_t from;
  char32_t to[2];
};

#include "tokenizer/bert_unicode_tables.inc"

bool in_ranges(std::span<const CodePointRange> table, char32_t c) {
  // The first range that ends at or after c.
  const auto it =
      std::lower_bound(table.begin(), table.end(), c, [](const CodePointRange& r, char32_t v) { return r.last < v; });
  return it != table.end() && it->first <= c;
}

int32_t combining_class(char32_t c) {
  return utf8proc_get_property(static_cast<utf8proc_int32_t>(c))->combining_class;
}

}  // namespace

bool removed_by_clean_text(char32_t c) {
  return in_ranges(kRemovedByCleanText, c);
}

bool is_punctuation(char32_t c) {
  return in_ranges(kPunctuation, c);
}

bool is_nonspacing_mark(char32_t c) {
  return in_ranges(kNonspacingMarks, c);
}

bool is_cjk_ideograph(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) || (c >= 0xF900 && c <= 0xFAFF) ||
         (c >= 0x2F800 && c <= 0x2FA1F);
}

void append_lowercase(std::u32string& out, char32_t c) {
  const auto it = std::lower_bound(std::begin(kLowercaseExceptions), std::end(kLowercaseExceptions), c,
                                   [](const LowercaseException& e, char32_t v) { return e.from < v; });
  if (it != std::end(kLowercaseExceptions) && it->from == c) {
    out.push_back(it->to[0]);
    if (it->to[1] != 0) out.push_back(it->to[1]);
    return;
  }
  out.push_back(static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
}

void append_nfd(std::u32string& out, std::u32string_view text) {
  const size_t start = out.size();
  utf8proc_int32_t buffer[32];  // no canonical decomposition is longer than 4 code points
  for (const char32_t c : text) {
    if (std::find(std::begin(kNfdKept), std::end(kNfdKept), c) != std::end(kNfdKept)) {
      out.push_back(c);
      continue;
    }
    int last_boundclass = 0;
    const utf8proc_ssize_t n =
        utf8proc_decompose_char(static_cast<utf8proc_int32_t>(c), buffer, 32, UTF8PROC_DECOMPOSE, &last_boundclass);
    if (n <= 0 || n > 32) {
      out.push_back(c);  // not a scalar value: only reachable with unrepaired input, keep it as is
      continue;
    }
    out.insert(out.end(), buffer, buffer + n);
  }
  // Canonical ordering: within each run of combining marks (class > 0), a stable sort by class.
  auto mark = [](char32_t c) { return combining_class(c) != 0; };
  for (auto it = out.begin() + static_cast<std::ptrdiff_t>(start); it != out.end();) {
    const auto run_end = std::find_if_not(it, out.end(), mark);
    std::stable_sort(it, run_end, [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
    it = run_end == out.end() ? run_end : run_end + 1;
  }
}

}  // namespace kestrel::bert_unicode
