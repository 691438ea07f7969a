// A tensor is a typed view (dtype, row-major shape, pointer, device) plus shared ownership of the
// storage it views: an mmapped file region, a host allocation or a device allocation. Views are cheap to
// copy; the storage lives until the last view is gone.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace kestrel {

enum class Device : uint8_t { Cpu, Cuda };

struct Tensor {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // outermost first; a weight matrix is {out_features, in_features}
  void* data = nullptr;
  Device device = Device::Cpu;
  std::shared_ptr<void> storage;  // keeps `data` alive

  int64_t dim(int i) const { return shape.at(i < 0 ? shape.size() + i : i); }
  int ndim() const { return static_cast<int>(shape.size()); }
  int64_t numel() const;
  int64_t cols() const { return shape.empty() ? 1 : shape.back(); }  // innermost extent
  int64_t rows() const { return cols() ? numel() / cols() : 0; }     // everything else
  size_t row_nbytes() const { return row_bytes(dtype, cols()); }
  size_t nbytes() const { return static_cast<size_t>(rows()) * row_nbytes(); }
  bool empty() const { return data == nullptr; }
  std::string describe() const;  // "q4_1[576, 1536]"

  template <typename T>
  T* ptr() const {
    return static_cast<T*>(data);
  }
  // Pointer to row r (over the flattened outer dims).
  void* row(int64_t r) const { return static_cast<char*>(data) + static_cast<size_t>(r) * row_nbytes(); }

  // Same storage, new shape with the same number of elements.
  Tensor reshaped(std::vector<int64_t> new_shape) const;
  // Rows [begin, begin+count) of the outermost dimension, sharing storage.
  Tensor slice_rows(int64_t begin, int64_t count) const;

  // Zero-initialised host tensor owning its (64-byte aligned) storage.
  static Tensor empty_host(DType dtype, std::vector<int64_t> shape);
};

}  // namespace kestrel
