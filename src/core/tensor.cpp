#include "core/tensor.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

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
  size_t padded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, padded ? padded : 64);
  KS_CHECK(p != nullptr, "out of host memory allocating {} ({} bytes)", t.describe(), bytes);
  std::memset(p, 0, padded);
  t.storage = std::shared_ptr<void>(p, std::free);
  t.data = p;
  return t;
}

}  // namespace kestrel
