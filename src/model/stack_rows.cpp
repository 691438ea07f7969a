#include "model/stack_rows.h"

#include <cstring>

#include "core/thread_pool.h"

namespace kestrel {
namespace {

// On every core: the source is usually a fresh mapping of the model file, whose page faults limit one
// thread to a fraction of the memory bandwidth.
void parallel_copy(void* dst, const void* src, size_t bytes) {
  ThreadPool::global().parallel_for(
      static_cast<int64_t>(bytes),
      [&](int64_t begin, int64_t end) {
        std::memcpy(static_cast<char*>(dst) + begin, static_cast<const char*>(src) + begin, end - begin);
      },
      int64_t{1} << 20);
}

// Whether the parts lie back to back in one allocation (gate and up do in most model files).
bool adjacent(const std::vector<const Tensor*>& parts) {
  const Tensor& first = *parts.front();
  if (!first.storage) return false;
  const char* next = static_cast<const char*>(first.data);
  for (const Tensor* p : parts) {
    const bool same_owner = !p->storage.owner_before(first.storage) && !first.storage.owner_before(p->storage);
    if (!same_owner || p->data != next) return false;
    next += p->nbytes();
  }
  return true;
}

}  // namespace

Tensor stack_rows(const std::vector<const Tensor*>& parts) {
  const Tensor& first = *parts.front();
  const bool vectors = first.ndim() == 1;
  int64_t rows = 0;
  for (const Tensor* p : parts) {
    if (p->empty() || p->dtype != first.dtype || p->ndim() != first.ndim() || p->device != Device::Cpu ||
        (!vectors && p->cols() != first.cols()))
      return {};
    rows += vectors ? p->numel() : p->rows();
  }
  std::vector<int64_t> shape = vectors ? std::vector<int64_t>{rows} : std::vector{rows, first.cols()};
  if (adjacent(parts)) {
    Tensor view = first;
    view.shape = std::move(shape);
    return view;
  }
  Tensor out = Tensor::empty_host(first.dtype, std::move(shape));
  char* dst = static_cast<char*>(out.data);
  for (const Tensor* p : parts) {
    parallel_copy(dst, p->data, p->nbytes());
    dst += p->nbytes();
  }
  return out;
}

}  // namespace kestrel
