// Finding NaN and infinity in weights at load, without converting them. A model with a non-finite weight
// loads and then produces NaN logits, which sampling turns into empty or arbitrary text; the load is the
// place to name the tensor instead.
//
// Float types are checked element by element (all exponent bits set). Quantized GGUF blocks are checked by
// their f16/f32 scales only: the other fields are small integers, and products of them with finite f16
// scales stay far inside the f32 range, so a block decodes to NaN/Inf exactly when a scale is one.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

#include "core/dtype.h"
#include "core/tensor.h"

namespace kestrel {

class ThreadPool;

// The index of the first element in [begin, end) that is, or decodes to, NaN or infinity; -1 if none.
// For block types, begin and end are multiples of the block size and the index is a block's first element.
int64_t find_non_finite(DType t, const void* data, int64_t begin, int64_t end);

struct NonFinite {
  size_t tensor;    // index into the scanned list
  int64_t element;  // as find_non_finite reports it
};

// Scans host tensors in pieces of about 1 MiB spread over `pool`; the first hit in list order, if any.
std::optional<NonFinite> find_non_finite(std::span<const Tensor* const> tensors, ThreadPool& pool);

}  // namespace kestrel
