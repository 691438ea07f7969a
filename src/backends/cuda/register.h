// Registers a CUDA variant of every op with the dispatcher. Variants are registered only when a device
// is present, so a GPU-less machine dispatches to the CPU exactly as before.
#pragma once

namespace kestrel::ops {
struct Registries;
}

namespace kestrel::backends::cuda {
void register_variants(ops::Registries& r);
}
