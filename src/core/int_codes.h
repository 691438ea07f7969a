// Rows of b-bit unsigned integer codes (the grouped integer weight format, core/linear.h): the code types
// U2, U3, U4 and U8, each row a little-endian bit stream in which code k occupies bits b*k .. b*k + b - 1.
// For U4 and U2 that is the element order the KV pages use as well (dtype.h).
#pragma once

#include <cstdint>
#include <optional>

#include "core/dtype.h"
#include "core/host_device.h"

namespace kestrel {

// Bits per code of a code type; 0 for any other type.
int code_bits(DType t);
inline bool is_code_type(DType t) {
  return code_bits(t) != 0;
}
// The code type of b-bit codes (2, 3, 4 or 8), or nullopt.
std::optional<DType> code_type(int bits);

// Code k of a row of b-bit codes (reads only the bytes the code occupies). Also device code: the CUDA
// decoder of grouped weights reads rows with it.
KS_HD uint32_t code_at(const uint8_t* row, int bits, int64_t k) {
  const int64_t bit = k * bits;
  const int shift = static_cast<int>(bit & 7);
  uint32_t v = row[bit >> 3];
  if (shift + bits > 8) v |= static_cast<uint32_t>(row[(bit >> 3) + 1]) << 8;
  return (v >> shift) & ((1u << bits) - 1);
}

// Codes j and j + 16/b (j < 16/b) of a 32-bit little-endian word of b-bit codes (b = 2, 4 or 8: codes that
// never cross the word) as the two f16 halves of a pair, each 1024 + code: with the exponent of 1024 an f16
// has a step of exactly 1 up to 2048, so OR-ing a code into the mantissa of 0x6400 (1024) is the exact
// conversion, and one mask-and-or (a LOP3 on the GPU) converts two codes. The CUDA kernels subtract
// 1024 + zero point from the pair (exact too: integers below 2048).
KS_HD uint32_t code_pair_f16(uint32_t word, int bits, int j) {
  const uint32_t mask = ((1u << bits) - 1) * 0x00010001u;
  return ((word >> (bits * j)) & mask) | 0x64006400u;
}

// The first n codes of a row of type t (n a multiple of its block size) into one byte each, and back
// (pack_codes writes every byte of the row's first n codes; codes must fit in b bits).
void unpack_codes(DType t, const void* row, int64_t n, uint8_t* codes);
void pack_codes(DType t, const uint8_t* codes, int64_t n, void* row);

}  // namespace kestrel
