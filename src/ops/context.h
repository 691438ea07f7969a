// What every op call carries: the device and its execution lane (ops/runtime.h), the thread pool (CPU),
// and the user's variant choices.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "core/linear.h"
#include "core/tensor.h"
#include "ops/runtime.h"

namespace kestrel {
class ThreadPool;
}

namespace kestrel::ops {

// Sees the input of every linear layer a context runs, by the linear's id: the seam calibration hooks into
// (kestrel quantize's GPTQ Hessians and AWQ activation statistics; a per-modality or per-expert weighting
// can wrap one). ops::matmul calls it before the product, so it sees every linear of every forward the
// context runs, whatever variant does the work. A fused projection (q/k/v, gate/up stacked by
// DecoderWeights::fuse_projections) reports its one input once, under the fused id (blk.N.attn_qkv,
// blk.N.ffn_gate_up): its members read the same rows. Unset (the default) costs one pointer test per matmul.
class LinearObserver {
 public:
  virtual ~LinearObserver() = default;
  // x: the input rows [t, k] on the context's device (f32 on the CPU), valid only during the call.
  virtual void observe(const LinearId& id, const Tensor& x) = 0;
};

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
  // Calibration: told every linear's input (LinearObserver, above); null: none. Not owned.
  LinearObserver* observer = nullptr;

  ThreadPool& threads() const;
  // The lane; throws a clear error when a device context was built without one.
  Runtime& lane() const;
};

}  // namespace kestrel::ops
