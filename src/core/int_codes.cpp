#include "core/int_codes.h"

#include <cstring>

#include "core/error.h"

namespace kestrel {

int code_bits(DType t) {
  switch (t) {
    case DType::U2: return 2;
    case DType::U3: return 3;
    case DType::U4: return 4;
    case DType::U8: return 8;
    default: return 0;
  }
}

std::optional<DType> code_type(int bits) {
  switch (bits) {
    case 2: return DType::U2;
    case 3: return DType::U3;
    case 4: return DType::U4;
    case 8: return DType::U8;
    default: return std::nullopt;
  }
}

void unpack_codes(DType t, const void* row, int64_t n, uint8_t* codes) {
  KS_CHECK(is_code_type(t) && n % dtype_info(t).block_size == 0, "unpack_codes: {} codes of type {}", n, dtype_name(t));
  const auto* p = static_cast<const uint8_t*>(row);
  switch (t) {
    case DType::U8: std::memcpy(codes, p, static_cast<size_t>(n)); return;
    case DType::U4:
      for (int64_t j = 0; j < n / 2; ++j) codes[2 * j] = p[j] & 15, codes[2 * j + 1] = p[j] >> 4;
      return;
    case DType::U2:
      for (int64_t j = 0; j < n / 4; ++j)
        for (int i = 0; i < 4; ++i) codes[4 * j + i] = (p[j] >> (2 * i)) & 3;
      return;
    default:  // U3: eight codes in each three bytes
      for (int64_t j = 0; j < n / 8; ++j) {
        const uint32_t v = p[3 * j] | uint32_t{p[3 * j + 1]} << 8 | uint32_t{p[3 * j + 2]} << 16;
        for (int i = 0; i < 8; ++i) codes[8 * j + i] = (v >> (3 * i)) & 7;
      }
  }
}

void pack_codes(DType t, const uint8_t* codes, int64_t n, void* row) {
  const int bits = code_bits(t);
  KS_CHECK(bits != 0 && n % dtype_info(t).block_size == 0, "pack_codes: {} codes of type {}", n, dtype_name(t));
  auto* p = static_cast<uint8_t*>(row);
  std::memset(p, 0, row_bytes(t, n));
  for (int64_t k = 0; k < n; ++k) {
    KS_CHECK(codes[k] >> bits == 0, "pack_codes: code {} does not fit in {} bits", codes[k], bits);
    const int64_t bit = k * bits;
    const uint32_t v = uint32_t{codes[k]} << (bit & 7);
    p[bit >> 3] |= static_cast<uint8_t>(v);
    if ((bit & 7) + bits > 8) p[(bit >> 3) + 1] |= static_cast<uint8_t>(v >> 8);
  }
}

}  // namespace kestrel
