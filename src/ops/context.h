// What every op call carries: the device, the thread pool (CPU) or stream (CUDA), and the user's
// variant choices.
#pragma once

#include <map>
#include <string>

#include "core/tensor.h"

namespace kestrel {
class ThreadPool;
}

namespace kestrel::ops {

struct Context {
  Device device = Device::Cpu;
  ThreadPool* pool = nullptr;  // CPU: null means ThreadPool::global()
  void* stream = nullptr;      // CUDA: cudaStream_t
  // op name -> variant name to force (e.g. {"matmul", "cpu.ref"}); set from --variant op=name.
  std::map<std::string, std::string> forced;
  // Profiling (bench's GEMM share and attention time): when set, only the op of this name runs and every
  // other op returns at once, so a timed step measures that op's share alone.
  std::string profile_only;

  ThreadPool& threads() const;
};

}  // namespace kestrel::ops
