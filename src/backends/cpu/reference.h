// Naive, obviously-correct CPU implementations of every op: the oracle the ops harness checks every
// other variant against, and the documentation of each op's exact semantics. Single-threaded, f32.
#pragma once

#include "ops/dispatch.h"

namespace kestrel::backends::cpu {
void register_reference(ops::Registries& r);
}
