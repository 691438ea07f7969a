#include "tokenizer/unicode.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>

namespace kestrel::unicode {
namespace {

struct SequenceScan {
  size_t expected = 0;  // length the lead byte announces (0: not a lead byte)
  size_t valid = 0;     // how many leading bytes are a well-formed prefix of such a sequence
};

// Table 3-7 of the Unicode standard: the allowed range of the second byte depends on the lead byte;
// later continuation bytes are always 80..BF.
SequenceScan scan_sequence(std::string_view s) {
  if (s.empty()) return {};
  const auto b0 = static_cast<uint8_t>(s[0]);
  if (b0 < 0x80) return {1, 1};
  size_t expected = 0;
  uint8_t lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    expected = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    expected = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    expected = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return {};
  }
  size_t valid = 1;
  while (valid < expected && valid < s.size()) {
    const auto b = static_cast<uint8_t>(s[valid]);
    const bool ok = valid == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) break;
    ++valid;
  }
  return {expected, valid};
}

}  // namespace

size_t valid_sequence_length(std::string_view s) {
  const SequenceScan scan = scan_sequence(s);
  return scan.expected != 0 && scan.valid == scan.expected ? scan.expected : 0;
}

size_t invalid_subpart_length(std::string_view s) {
  const SequenceScan scan = scan_sequence(s);
  return scan.valid == 0 ? 1 : scan.valid;
}

bool is_valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const size_t n = valid_sequence_length(s.substr(i));
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string sanitize_utf8(std::string_view s) {
  if (is_valid_utf8(s)) return std::string(s);
  std::string out;
  out.reserve(s.size() + 16);
  size_t i = 0;
  while (i < s.size()) {
    const size_t n = valid_sequence_length(s.substr(i));
    if (n != 0) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out.append("\xEF\xBF\xBD");
      i += invalid_subpart_length(s.substr(i));
    }
  }
  return out;
}

size_t incomplete_tail_length(std::string_view s) {
  // A lead byte at most 3 bytes from the end whose sequence is well formed so far but cut short.
  for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
    const std::string_view tail = s.substr(s.size() - back);
    const SequenceScan scan = scan_sequence(tail);
    if (scan.expected == 0) continue;  // a continuation byte: keep looking for its lead
    return scan.valid == back && scan.expected > back ? back : 0;
  }
  return 0;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

char32_t decode_code_point(std::string_view s, size_t n) {
  const auto b0 = static_cast<uint8_t>(s[0]);
  if (n == 1) return b0;
  char32_t cp = b0 & (0xFF >> (n + 1));
  for (size_t i = 1; i < n; ++i) cp = (cp << 6) | (static_cast<uint8_t>(s[i]) & 0x3F);
  return cp;
}

std::u32string code_points(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t pos = 0; pos < s.size();) {
    const size_t n = std::max<size_t>(valid_sequence_length(s.substr(pos)), 1);  // 1 only for invalid input
    out.push_back(decode_code_point(s.substr(pos), n));
    pos += n;
  }
  return out;
}

bool is_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

const std::array<char32_t, 256>& byte_to_unicode() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      t[b] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

void append_byte_level(std::string& out, std::string_view bytes) {
  // Pre-encoded UTF-8 of each byte's character: this runs once per pre-token, so avoid re-encoding.
  static const std::array<std::string, 256> encoded = [] {
    std::array<std::string, 256> e;
    for (int b = 0; b < 256; ++b) append_utf8(e[b], byte_to_unicode()[b]);
    return e;
  }();
  for (const char c : bytes) out.append(encoded[static_cast<uint8_t>(c)]);
}

bool decode_byte_level(std::string_view encoded, std::string& out) {
  // Every mapped character is below U+0144, so a two-byte UTF-8 sequence or ASCII covers them all.
  static const std::array<int16_t, 0x144> inverse = [] {
    std::array<int16_t, 0x144> inv;
    inv.fill(-1);
    for (int b = 0; b < 256; ++b) inv[byte_to_unicode()[b]] = static_cast<int16_t>(b);
    return inv;
  }();
  size_t i = 0;
  while (i < encoded.size()) {
    const size_t n = valid_sequence_length(encoded.substr(i));
    char32_t cp = 0x10000;
    if (n == 1) {
      cp = static_cast<uint8_t>(encoded[i]);
    } else if (n == 2) {
      cp = ((static_cast<uint8_t>(encoded[i]) & 0x1F) << 6) | (static_cast<uint8_t>(encoded[i + 1]) & 0x3F);
    }
    if (cp >= inverse.size() || inverse[cp] < 0) return false;
    out.push_back(static_cast<char>(inverse[cp]));
    i += n;
  }
  return true;
}

std::string nfc(std::string_view s) {
  if (s.empty()) return {};
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                          static_cast<utf8proc_ssize_t>(s.size()), &out,
                                          static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  // Only invalid UTF-8 fails, and callers repair text first; keep it unchanged rather than lose it.
  if (n < 0) return std::string(s);
  std::string r(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
  std::free(out);
  return r;
}

}  // namespace kestrel::unicode
