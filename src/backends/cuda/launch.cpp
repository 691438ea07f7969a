// The policy behind launch.cuh: whether a kernel may be launched as a programmatic dependent.
#include "backends/cuda/launch.cuh"

#include <cuda_runtime.h>

#include <cstdlib>
#include <mutex>
#include <string_view>
#include <unordered_map>

#include "backends/cuda/cuda_check.h"

namespace kestrel::backends::cuda {

bool pdl_enabled() {
  static const bool ok = [] {
    const char* env = std::getenv("KESTREL_PDL");
    if (env && std::string_view(env) == "0") return false;
    int dev = 0, major = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    return major >= 9;
  }();
  return ok;
}

bool pdl_enabled_for(const void* kernel) {
  if (!pdl_enabled()) return false;
  static std::mutex mu;
  static std::unordered_map<const void*, bool> known;
  std::lock_guard lock(mu);
  auto [it, added] = known.try_emplace(kernel, false);
  if (added) {
    // The code that runs must contain griddepcontrol: a build without an sm_90 target runs JIT-compiled
    // older PTX where pdl_wait() is compiled out, and launching that as a dependent would race.
    cudaFuncAttributes attr{};
    CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
    it->second = attr.ptxVersion >= 90;
  }
  return it->second;
}

}  // namespace kestrel::backends::cuda
