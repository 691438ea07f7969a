// What every op call carries: the device and its execution lane (ops/runtime.h), the thread pool (CPU),
// and the user's variant choices.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "core/tensor.h"
#include "ops/runtime.h"

namespace kestrel {
class ThreadPool;
}

namespace kestrel::ops {

struct Context {
  Device device = Device::Cpu;
  ThreadPool* pool = nullptr;  // CPU: null means ThreadPool::global()
  // The lane ops run on. Required on CUDA; on the CPU null means plain host memory and no queue.
  std::shared_ptr<Runtime> runtime;
  // op name -> variant name to force (e.g. {"matmul", "cpu.ref"}); set from --variant op=name.
  std::map<std::string, std::string> forced;
  // Profiling (bench's GEMM share and attention time): when set, only the op of this name runs and every
  // other op returns at once, so a timed step measures that op's share alone.
  std::string profile_only;
  // Batch-invariant mode (--batch-invariant): a row's result must not depend on the other rows of a call
  // or on how a prompt was cut into chunks, so only variants whose reductions are fixed per row are
  // chosen (Variant::batch_dependent), and planned ops (decode attention) plan per sequence.
  bool batch_invariant = false;

  ThreadPool& threads() const;
  // The lane; throws a clear error when a device context was built without one.
  Runtime& lane() const;
};

}  // namespace kestrel::ops
