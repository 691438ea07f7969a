// Registers every CPU variant (reference and SIMD) of every op with the dispatcher.
#pragma once

namespace kestrel::ops {
struct Registries;
}

namespace kestrel::backends::cpu {
void register_variants(ops::Registries& r);
}
