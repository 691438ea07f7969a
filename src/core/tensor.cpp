#include "core/tensor.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace kestrel {

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::string Tensor::describe() const {
  return fmt::format("{}[{}]", dtype_name(dtype), fmt::join(shape, ", "));
}

Tensor Tensor::reshaped(std::vector<int64_t> new_shape) const {
  Tensor t = *this;
  t.shape = std::move(new_shape);
  KS_CHECK(t.numel() == numel(), "cannot reshape {} to {} elements", describe(), t.numel());
  KS_CHECK(t.cols() % dtype_info(dtype).block_size == 0, "reshape of {} splits a quantization block", describe());
  return t;
}

Tensor Tensor::slice_rows(int64_t begin, int64_t count) const {
  KS_CHECK(!shape.empty() && begin >= 0 && count >= 0 && begin + count <= shape[0], "row slice [{}, {}) out of {}",
           begin, begin + count, describe());
  Tensor t = *this;
  t.shape[0] = count;
  const size_t outer_bytes = shape[0] ? nbytes() / static_cast<size_t>(shape[0]) : 0;
  t.data = static_cast<char*>(data) + static_cast<size_t>(begin) * outer_bytes;
  return t;
}

Tensor Tensor::empty_host(DType dtype, std::vector<int64_t> shape) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  size_t bytes = t.nbytes();
  constexpr size_t kAlign = 64;
  const size_t padded = (bytes + kAlign - 1) / kAlign * kAlign;
  // calloc, not aligned_alloc + memset: large blocks come zeroed from the kernel's untouched pages, so a big
  // buffer (a KV cache sized for the whole context) becomes resident only as it is written.
  void* raw = std::calloc(padded + kAlign, 1);
  KS_CHECK(raw != nullptr, "out of host memory allocating {} ({} bytes)", t.describe(), bytes);
  t.storage = std::shared_ptr<void>(raw, std::free);
  t.data = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(raw) + kAlign - 1) & ~uintptr_t{kAlign - 1});
  return t;
}

}  // namespace kestrel
