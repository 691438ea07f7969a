// The avx512vnni kernel table: AVX-512 VL/BW/VNNI (256-bit vectors with one-instruction u8 x s8 dot products).
#include "backends/cpu/kernels.h"

#if defined(__x86_64__)

#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <type_traits>

#include "core/half.h"
#include "core/quant_blocks.h"

namespace kestrel::backends::cpu {
namespace avx512vnni {

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")
#define KS_VNNI 1
#include "backends/cpu/kernels_x86.inc"
#undef KS_VNNI
#pragma GCC pop_options

#include "backends/cpu/kernels_x86_table.inc"

bool available() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c") &&
         __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}

}  // namespace avx512vnni

const Kernels& avx512vnni_kernels() {
  static const Kernels table = avx512vnni::make_table("avx512vnni", avx512vnni::available);
  return table;
}

}  // namespace kestrel::backends::cpu

#else

namespace kestrel::backends::cpu {
const Kernels& avx512vnni_kernels() {
  static const Kernels table{.name = "avx512vnni", .available = [] { return false; }};
  return table;
}
}  // namespace kestrel::backends::cpu

#endif
