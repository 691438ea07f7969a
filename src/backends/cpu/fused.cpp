// The fused ops (add_rmsnorm, swiglu, rope_kv_write) on the CPU, composed from the unfused ones. Fusion
// saves GPU launches; on the CPU the composition costs only a few small copies, so one implementation
// serves both roles: "cpu.ref" composes the reference variants (the oracle for the GPU kernels) and
// "cpu.simd" composes whatever the dispatcher picks for each step.
#include <algorithm>
#include <cstring>

#include "backends/cpu/fast_ops.h"
#include "backends/cpu/reference.h"
#include "core/error.h"

namespace kestrel::backends::cpu {
namespace {

using namespace ops;

// Runs one unfused step: the named variant for the reference, the dispatcher's choice otherwise.
struct Steps {
  const char* variant;  // nullptr: dispatch
  template <typename Args>
  void operator()(const Registry<Args>& reg, const Args& args, const Context& ctx) const {
    if (variant)
      reg.run_variant(variant, args, ctx);
    else
      reg.run(args, ctx);
  }
};

// Columns [c0, c0 + n) of every row of x ([T, C] f32) copied into a new [T, n] tensor.
Tensor columns(const Tensor& x, int64_t c0, int64_t n) {
  const int64_t T = x.rows(), C = x.cols();
  Tensor out = Tensor::empty_host(DType::F32, {T, n});
  for (int64_t t = 0; t < T; ++t)
    std::memcpy(out.ptr<float>() + t * n, x.ptr<float>() + t * C + c0, static_cast<size_t>(n) * sizeof(float));
  return out;
}

void add_rmsnorm(const AddRmsnormArgs& a, const Context& ctx, Steps step) {
  step(registries().add, BinaryArgs{a.x, a.r, a.x}, ctx);
  step(registries().rmsnorm, RmsnormArgs{a.x, a.w, a.eps, a.y}, ctx);
}

// swiglu and geglu: the activation of gate times up, over the halves of a fused projection's output.
void gated(const Registry<BinaryArgs>& act_mul, const SwigluArgs& a, const Context& ctx, Steps step) {
  const int64_t F = a.y.cols();
  Tensor gate = columns(a.gate_up, 0, F), up = columns(a.gate_up, F, F);
  step(act_mul, BinaryArgs{gate, up, a.y}, ctx);
}

void rope_kv_write(const RopeKvWriteArgs& a, const Context& ctx, Steps step) {
  const int64_t T = a.q_out.dim(0), H = a.q_out.dim(1), D = a.q_out.dim(2), Hkv = a.cache.k.dim(2);
  Tensor q = columns(a.qkv, 0, H * D), k = columns(a.qkv, H * D, Hkv * D), v = columns(a.qkv, (H + Hkv) * D, Hkv * D);
  if (a.norm.q) {
    Tensor heads = q.reshaped({T * H, D});
    step(registries().rmsnorm, RmsnormArgs{heads, *a.norm.q, a.norm.eps, heads}, ctx);
  }
  if (a.norm.k) {
    Tensor heads = k.reshaped({T * Hkv, D});
    step(registries().rmsnorm, RmsnormArgs{heads, *a.norm.k, a.norm.eps, heads}, ctx);
  }
  q = q.reshaped({T, H, D});
  k = k.reshaped({T, Hkv, D});
  v = v.reshaped({T, Hkv, D});
  step(registries().rope, RopeArgs{q, a.positions, a.p}, ctx);
  step(registries().rope, RopeArgs{k, a.positions, a.p}, ctx);
  std::memcpy(a.q_out.data, q.data, q.nbytes());
  step(registries().kv_write, KvWriteArgs{k, v, a.slots, a.cache}, ctx);
}

}  // namespace

void register_fused(Registries& r, const char* name, int priority) {
  const Steps step{std::strcmp(name, "cpu.ref") == 0 ? "cpu.ref" : nullptr};
  r.add_rmsnorm.add({name, Device::Cpu, priority,
                     [](const AddRmsnormArgs& a, std::string* why) {
                       return all_f32({&a.x, &a.r, &a.w, &a.y}, why);
                     },
                     [step](const AddRmsnormArgs& a, const Context& ctx) { add_rmsnorm(a, ctx, step); }});
  auto gated_ok = [](const SwigluArgs& a, std::string* why) { return all_f32({&a.gate_up, &a.y}, why); };
  r.swiglu.add({name, Device::Cpu, priority, gated_ok,
                [step](const SwigluArgs& a, const Context& ctx) { gated(registries().silu_mul, a, ctx, step); }});
  r.geglu.add({name, Device::Cpu, priority, gated_ok,
               [step](const SwigluArgs& a, const Context& ctx) { gated(registries().gelu_mul, a, ctx, step); }});
  r.rope_kv_write.add({name, Device::Cpu, priority,
                       [](const RopeKvWriteArgs& a, std::string* why) {
                         if (!all_f32({&a.qkv, &a.q_out}, why)) return false;
                         if (a.positions.dtype != DType::I32 || a.slots.dtype != DType::I32) {
                           if (why) *why = "positions and slots must be i32";
                           return false;
                         }
                         return true;
                       },
                       [step](const RopeKvWriteArgs& a, const Context& ctx) { rope_kv_write(a, ctx, step); }});
}

}  // namespace kestrel::backends::cpu
