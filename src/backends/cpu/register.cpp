#include "backends/cpu/register.h"

#include "backends/cpu/reference.h"

#include <cstring>

#include "ops/dispatch.h"

namespace kestrel::backends::cpu {

void register_variants(ops::Registries& r) {
  auto& mem = r.memory[static_cast<int>(Device::Cpu)];
  mem.allocate = [](DType dtype, std::vector<int64_t> shape, const ops::Context&) {
    return Tensor::empty_host(dtype, std::move(shape));
  };
  mem.upload = [](const Tensor& host, const ops::Context&) { return host; };
  mem.download = [](const Tensor& src, Tensor& dst, const ops::Context&) {
    if (dst.data != src.data) std::memcpy(dst.data, src.data, src.nbytes());
  };
  register_reference(r);
}

}  // namespace kestrel::backends::cpu
