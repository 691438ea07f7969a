// Whole-row conversion between element types, for moving weights to a device in another format. The result
// is bit-identical to dequantize_row followed by quantize_row (the reference), with direct paths for what
// weight loading does most: copies, f16 -> bf16 and f32 -> bf16.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace kestrel {

// Converts `rows` rows of `cols` elements each (cols a multiple of both block sizes) from `from` at src to
// `to` at dst. Throws kestrel::Error when either type has no reference conversion.
void convert_rows(DType from, const void* src, DType to, void* dst, int64_t rows, int64_t cols);

}  // namespace kestrel
