// The avx2 kernel table: AVX2 + FMA + F16C.
#include "backends/cpu/kernels.h"

#if defined(__x86_64__)

#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <type_traits>

#include "core/half.h"
#include "core/quant_blocks.h"

namespace kestrel::backends::cpu {
namespace avx2 {

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#define KS_VNNI 0
#include "backends/cpu/kernels_x86.inc"
#undef KS_VNNI
#pragma GCC pop_options

#include "backends/cpu/kernels_x86_table.inc"

bool available() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

}  // namespace avx2

const Kernels& avx2_kernels() {
  static const Kernels table = avx2::make_table("avx2", avx2::available);
  return table;
}

}  // namespace kestrel::backends::cpu

#else

namespace kestrel::backends::cpu {
const Kernels& avx2_kernels() {
  static const Kernels table{.name = "avx2", .available = [] { return false; }};
  return table;
}
}  // namespace kestrel::backends::cpu

#endif
