#include "backends/backends.h"

#include <mutex>

#include "backends/cpu/register.h"
#include "backends/cpu/runtime.h"
#include "core/error.h"
#include "ops/classifier_dispatch.h"
#include "ops/dispatch.h"
#include "ops/moe_dispatch.h"
#if KESTREL_HAVE_CUDA
#include "backends/cuda/device_tensor.h"
#include "backends/cuda/register.h"
#include "backends/cuda/runtime.h"
#endif

namespace kestrel::backends {

void install() {
  static std::once_flag once;
  std::call_once(once, [] {
    ops::Registries& r = ops::registries();
    cpu::register_variants(r);
    cpu::register_classifier_variants(ops::classifier_registries());
    cpu::register_moe_variants(ops::moe_registries());
#if KESTREL_HAVE_CUDA
    cuda::register_variants(r);
#endif
  });
}

bool available(Device device) {
  if (device == Device::Cpu) return true;
#if KESTREL_HAVE_CUDA
  return cuda::cuda_available();
#else
  return false;
#endif
}

std::shared_ptr<ops::Runtime> make_runtime(Device device, const ops::LaneOptions& options) {
  install();
  if (device == Device::Cpu) return cpu::make_runtime();
#if KESTREL_HAVE_CUDA
  KS_CHECK(cuda::cuda_available(), "no CUDA device is visible to this process");
  return cuda::make_runtime(options);
#else
  KS_FAIL("this build of Kestrel has no CUDA backend (configure it where nvcc is on PATH)");
#endif
}

std::shared_ptr<ops::Runtime> default_runtime(Device device) {
  static std::mutex mu;
  static std::shared_ptr<ops::Runtime>* lanes = new std::shared_ptr<ops::Runtime>[2];  // by Device; never freed
  std::lock_guard lock(mu);
  auto& lane = lanes[static_cast<int>(device)];
  if (!lane) lane = make_runtime(device);
  return lane;
}

ops::Context make_context(Device device) {
  ops::Context ctx;
  ctx.device = device;
  ctx.runtime = default_runtime(device);
  return ctx;
}

}  // namespace kestrel::backends
