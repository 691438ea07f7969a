#include "backends/cpu/register.h"

#include <cstring>

#include "backends/cpu/fast_ops.h"
#include "backends/cpu/reference.h"

namespace kestrel::backends::cpu {
namespace {

using namespace ops;

// Priorities: cpu.ref (0) is the oracle; the threaded ISA-independent ops are "cpu.simd"; ops with
// per-ISA inner loops register once per kernel table, the widest ISA the CPU has winning. Matmul
// registers each table twice: "cpu.<isa>" with 8-bit activations (llama.cpp's Q8 partners, kept for
// A/B runs) and "cpu.<isa>.a16" with 16-bit ones, which wins within the table: it is as fast and keeps
// the top-1 agreement with exact f32 math that 8-bit activations lose on models with outliers.
constexpr int kSimdPriority = 10;

int table_priority(const Kernels& k) {
  if (&k == &avx512vnni_kernels()) return 30;
  if (&k == &avx2_kernels()) return 20;
  return 10;
}

void register_table(Registries& r, const Kernels& k) {
  const std::string name = std::string("cpu.") + k.name;
  const int prio = table_priority(k);
  for (ActFormat f : {ActFormat::Q8, ActFormat::Q16})
    r.matmul.add({f == ActFormat::Q16 ? name + ".a16" : name, Device::Cpu, f == ActFormat::Q16 ? prio + 5 : prio,
                  [&k, f](const MatmulArgs& a, std::string* why) { return matmul_supports(k, f, a, why); },
                  [&k, f](const MatmulArgs& a, const Context& c) { matmul(k, f, a, c); }});
  r.attention.add({name, Device::Cpu, prio,
                   [&k](const AttentionArgs& a, std::string* why) { return attention_supports(k, a, why); },
                   [&k](const AttentionArgs& a, const Context& c) { attention(k, a, c); }});
  r.silu_mul.add({name, Device::Cpu, prio,
                  [&k](const BinaryArgs& a, std::string* why) {
                    if (!k.available()) {
                      if (why) *why = std::string("this CPU lacks the ") + k.name + " instructions";
                      return false;
                    }
                    return act_mul_supports(a, why);
                  },
                  [&k](const BinaryArgs& a, const Context& c) { silu_mul(k, a, c); }});
}

}  // namespace

void register_variants(ops::Registries& r) {
  register_reference(r);
  register_sampling(r);
  register_fused(r, "cpu.ref", 0);
  register_fused(r, "cpu.simd", kSimdPriority);
  for (const Kernels* k : {&generic_kernels(), &avx2_kernels(), &avx512vnni_kernels()}) register_table(r, *k);
  r.embed.add({"cpu.simd", Device::Cpu, kSimdPriority, embed_supports, embed});
  r.scatter_rows.add({"cpu.simd", Device::Cpu, kSimdPriority, scatter_rows_supports, scatter_rows});
  r.rmsnorm.add({"cpu.simd", Device::Cpu, kSimdPriority, rmsnorm_supports, rmsnorm});
  r.add.add({"cpu.simd", Device::Cpu, kSimdPriority, add_supports, add});
  r.gelu_mul.add({"cpu.simd", Device::Cpu, kSimdPriority, act_mul_supports, gelu_mul});
  r.rope.add({"cpu.simd", Device::Cpu, kSimdPriority, rope_supports, rope});
  r.kv_write.add({"cpu.simd", Device::Cpu, kSimdPriority, kv_write_supports, kv_write});
  r.layernorm.add({"cpu.simd", Device::Cpu, kSimdPriority, layernorm_supports, layernorm});
  r.gelu.add({"cpu.simd", Device::Cpu, kSimdPriority, gelu_supports, gelu});
  r.encoder_attention.add({"cpu.simd", Device::Cpu, kSimdPriority, encoder_attention_supports, encoder_attention});
}

}  // namespace kestrel::backends::cpu
