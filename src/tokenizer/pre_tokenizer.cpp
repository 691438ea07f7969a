#include "tokenizer/pre_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <string>

#include "core/error.h"
#include "tokenizer/unicode.h"

namespace kestrel {
namespace {

// Hugging Face's regexes run on Oniguruma, whose case-insensitive contractions fold only ASCII here,
// while PCRE2 with UTF would also fold U+017F (ſ) to 's'. Spell the contractions out to keep Oniguruma's
// behaviour (llama.cpp made the same change).
std::string adapt_pattern(std::string pattern) {
  static constexpr std::string_view kCaseless = "(?i:'s|'t|'re|'ve|'m|'ll|'d)";
  static constexpr std::string_view kExplicit = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";
  for (size_t pos = pattern.find(kCaseless); pos != std::string::npos; pos = pattern.find(kCaseless, pos))
    pattern.replace(pos, kCaseless.size(), kExplicit);
  return pattern;
}

struct Segment {
  TextRange range;
  bool is_match = false;
};

// Combines matches and the gaps between them into pieces the way Hugging Face's
// SplitDelimiterBehavior does (tokenizers/src/tokenizer/normalizer.rs, NormalizedString::split).
void combine(std::vector<Segment>& segs, SplitBehavior behavior, std::vector<TextRange>& out) {
  std::vector<Segment> acc;
  acc.reserve(segs.size());
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::isolated: acc = std::move(segs); break;
    case SplitBehavior::removed:
      for (const Segment& s : segs)
        if (!s.is_match) acc.push_back(s);
      break;
    case SplitBehavior::merged_with_previous:
      for (const Segment& s : segs) {
        if (s.is_match && !previous_match && !acc.empty())
          acc.back().range.end = s.range.end;
        else
          acc.push_back(s);
        previous_match = s.is_match;
      }
      break;
    case SplitBehavior::merged_with_next:
      for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
        if (it->is_match && !previous_match && !acc.empty())
          acc.back().range.begin = it->range.begin;
        else
          acc.push_back(*it);
        previous_match = it->is_match;
      }
      std::reverse(acc.begin(), acc.end());
      break;
    case SplitBehavior::contiguous:
      for (const Segment& s : segs) {
        if (s.is_match == previous_match && !acc.empty())
          acc.back().range.end = s.range.end;
        else
          acc.push_back(s);
        previous_match = s.is_match;
      }
      break;
  }
  for (const Segment& s : acc)
    if (s.range.end > s.range.begin) out.push_back(s.range);
}

}  // namespace

struct PreTokenizer::Compiled {
  pcre2_code* code = nullptr;
  SplitBehavior behavior = SplitBehavior::isolated;
  bool invert = false;
  ~Compiled() { pcre2_code_free(code); }
};

PreTokenizer::PreTokenizer(const std::vector<PreTokenizerSplit>& splits) {
  for (const PreTokenizerSplit& split : splits) {
    const std::string pattern = adapt_pattern(split.regex);
    int error_code = 0;
    PCRE2_SIZE error_offset = 0;
    auto step = std::make_unique<Compiled>();
    step->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP,
                               &error_code, &error_offset, nullptr);
    if (step->code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error_code, message, sizeof(message));
      KS_FAIL("tokenizer: bad pre-tokenizer regex at offset {}: {} (pattern: {})", error_offset,
              reinterpret_cast<const char*>(message), split.regex);
    }
    // JIT is an optimisation only: where it is unavailable the interpreter gives the same matches.
    pcre2_jit_compile(step->code, PCRE2_JIT_COMPLETE);
    step->behavior = split.behavior;
    step->invert = split.invert;
    steps_.push_back(std::move(step));
  }
}

PreTokenizer::~PreTokenizer() = default;
PreTokenizer::PreTokenizer(PreTokenizer&&) noexcept = default;
PreTokenizer& PreTokenizer::operator=(PreTokenizer&&) noexcept = default;

std::vector<TextRange> PreTokenizer::split(std::string_view text) const {
  std::vector<TextRange> pieces;
  if (!text.empty()) pieces.push_back({0, text.size()});
  std::vector<TextRange> next;
  std::vector<Segment> segs;
  for (const auto& step : steps_) {
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
        pcre2_match_data_create_from_pattern(step->code, nullptr), &pcre2_match_data_free);
    KS_CHECK(md != nullptr, "tokenizer: out of memory for regex match data");
    next.clear();
    for (const TextRange& piece : pieces) {
      // The regex sees only this piece, as in Hugging Face: lookarounds stop at the piece's edges.
      const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data() + piece.begin);
      const size_t length = piece.end - piece.begin;
      segs.clear();
      size_t offset = 0, gap_begin = 0;
      while (offset < length) {
        const int rc = pcre2_match(step->code, subject, length, offset, PCRE2_NO_UTF_CHECK, md.get(), nullptr);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
          PCRE2_UCHAR message[256];
          pcre2_get_error_message(rc, message, sizeof(message));
          KS_FAIL("tokenizer: pre-tokenizer regex failed: {}", reinterpret_cast<const char*>(message));
        }
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
        if (ov[1] == ov[0]) {  // an empty match splits nothing; step over one character
          const size_t n = unicode::valid_sequence_length(std::string_view(text).substr(piece.begin + ov[0]));
          offset = ov[0] + (n == 0 ? 1 : n);
          continue;
        }
        if (ov[0] > gap_begin) segs.push_back({{piece.begin + gap_begin, piece.begin + ov[0]}, step->invert});
        segs.push_back({{piece.begin + ov[0], piece.begin + ov[1]}, !step->invert});
        gap_begin = offset = ov[1];
      }
      if (gap_begin < length) segs.push_back({{piece.begin + gap_begin, piece.end}, step->invert});
      combine(segs, step->behavior, next);
    }
    pieces.swap(next);
  }
  return pieces;
}

}  // namespace kestrel
