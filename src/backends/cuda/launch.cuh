// Kernel launches as programmatic dependents (Hopper PDL): a kernel launched this way may start while the
// stream's previous kernel still runs — once every block of that kernel has called pdl_launch_dependents()
// or exited — so its launch, its block scheduling and whatever it reads before pdl_wait() (weights, page
// tables: data no earlier kernel of the step writes) overlap the predecessor's tail.
//
// The contract for such a kernel (common.cuh): before pdl_wait() it reads only data no kernel before it
// writes, and writes nothing; its blocks call pdl_wait() before they exit (a grid whose blocks all
// exited without waiting could complete before its predecessor, and the kernels after it rely on the
// chain of completions). Kernels before and after it need not know: an ordinary launch after it waits
// for its completion, and a predecessor that never calls pdl_launch_dependents() releases it on exit.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "backends/cuda/cuda_check.h"

namespace kestrel::backends::cuda {

// Whether kernels are launched as programmatic dependents: the device runs them (Hopper and
// later) and KESTREL_PDL is not 0 (KESTREL_PDL=0 gives ordinary launches, for A/B runs and debugging).
bool pdl_enabled();
// pdl_enabled() and `kernel` (a __global__ function) was compiled for sm_90 or later, so its pdl_wait()
// is real. Cached per kernel.
bool pdl_enabled_for(const void* kernel);

// `dependent` false gives an ordinary launch of the same kernel (its pdl_wait() then returns at once).
template <typename... Params, typename... Args>
void launch_kernel(bool dependent, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute pdl{};
  pdl.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  pdl.val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = &pdl;
  cfg.numAttrs = dependent && pdl_enabled_for(reinterpret_cast<const void*>(kernel)) ? 1 : 0;
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

template <typename... Params, typename... Args>
void launch_dependent(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                      Args&&... args) {
  launch_kernel(true, kernel, grid, block, smem, stream, std::forward<Args>(args)...);
}

}  // namespace kestrel::backends::cuda
