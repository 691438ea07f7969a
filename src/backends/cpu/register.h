// Registers every CPU variant (reference and SIMD) of every op with the dispatcher.
#pragma once

namespace kestrel::ops {
struct Registries;
struct ClassifierRegistries;
}  // namespace kestrel::ops

namespace kestrel::backends::cpu {
void register_variants(ops::Registries& r);
// cpu.ref of the classifier's ops (classifier_reference.cpp).
void register_classifier_variants(ops::ClassifierRegistries& r);
}  // namespace kestrel::backends::cpu
