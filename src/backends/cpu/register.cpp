#include "backends/cpu/register.h"

#include "backends/cpu/reference.h"

namespace kestrel::backends::cpu {

void register_variants(ops::Registries& r) { register_reference(r); }

}  // namespace kestrel::backends::cpu
