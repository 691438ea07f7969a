// Naive, obviously-correct CPU implementations of every op: the oracle the ops harness checks every
// other variant against, and the documentation of each op's exact semantics. Single-threaded, f32.
#pragma once

#include "ops/dispatch.h"

namespace kestrel::backends::cpu {
void register_reference(ops::Registries& r);
void register_sampling(ops::Registries& r);  // sampling.cpp
// The fused ops composed from the unfused ones (fused.cpp): under "cpu.ref" from the reference variants,
// under any other name from the dispatcher's picks.
void register_fused(ops::Registries& r, const char* name, int priority);
}  // namespace kestrel::backends::cpu
