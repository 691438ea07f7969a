// UTF-8 helpers shared by the tokenizers: validation with the same replacement policy as Python's
// errors="replace" and Rust's String::from_utf8_lossy (one U+FFFD per maximal invalid subpart), so
// that text and decoded output agree with Hugging Face byte for byte; and the GPT-2 byte<->unicode map
// that byte-level BPE vocabularies are written in.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace kestrel::unicode {

// Length of the well-formed UTF-8 sequence at the start of `s`, or 0 when `s` starts with an invalid
// or truncated sequence. Follows Unicode Table 3-7 (no overlongs, no surrogates, nothing above U+10FFFF).
size_t valid_sequence_length(std::string_view s);

// Length of the maximal subpart of an ill-formed sequence at the start of `s` (always >= 1): the bytes
// that one U+FFFD replaces.
size_t invalid_subpart_length(std::string_view s);

// True when `s` is entirely well-formed UTF-8.
bool is_valid_utf8(std::string_view s);

// `s` with every maximal invalid subpart replaced by U+FFFD (a copy of `s` when already valid).
std::string sanitize_utf8(std::string_view s);

// `s` in Unicode normalization form C (canonical composition), as Hugging Face's NFC normalizer does;
// `s` must be valid UTF-8.
std::string nfc(std::string_view s);

// Number of bytes at the end of `s` that form an incomplete but so far well-formed sequence (0-3): the
// bytes a streaming decoder must hold back until the next token arrives.
size_t incomplete_tail_length(std::string_view s);

// Appends the UTF-8 encoding of code point `cp` (must be a scalar value).
void append_utf8(std::string& out, char32_t cp);

// The code point of the `n`-byte well-formed sequence at the start of `s` (n from valid_sequence_length).
char32_t decode_code_point(std::string_view s, size_t n);
// The code points of valid UTF-8 text.
std::u32string code_points(std::string_view s);

// Unicode White_Space: what Rust's char::is_whitespace, and so Hugging Face, counts as whitespace.
bool is_white_space(char32_t c);

// GPT-2's reversible byte<->unicode map: printable bytes map to themselves, the rest to U+0100 onwards,
// so every byte string becomes a string of visible characters.
const std::array<char32_t, 256>& byte_to_unicode();
// Appends the byte-level (GPT-2 encoded) form of the raw bytes in `bytes`.
void append_byte_level(std::string& out, std::string_view bytes);
// The raw bytes of a byte-level encoded string; false when a character is outside the map.
bool decode_byte_level(std::string_view encoded, std::string& out);

}  // namespace kestrel::unicode
