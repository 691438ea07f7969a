// Registers every CPU variant (reference and SIMD) of every op with the dispatcher.
#pragma once

namespace kestrel::ops {
struct Registries;
struct ClassifierRegistries;
struct MoeRegistries;
}  // namespace kestrel::ops

namespace kestrel::backends::cpu {
void register_variants(ops::Registries& r);
// cpu.ref of the classifier's ops (classifier_reference.cpp).
void register_classifier_variants(ops::ClassifierRegistries& r);
// cpu.ref and cpu.grouped of the MoE ops (moe.cpp).
void register_moe_variants(ops::MoeRegistries& r);
}  // namespace kestrel::backends::cpu
