// The rows of several host tensors as one (q/k/v and gate/up stacked into one projection at load).
#pragma once

#include <vector>

#include "core/tensor.h"

namespace kestrel {

// The rows of `parts` stacked into one host tensor (vectors: concatenated): a view when they are adjacent
// already, else a copy made on every core; empty when they differ in dtype or width.
Tensor stack_rows(const std::vector<const Tensor*>& parts);

}  // namespace kestrel
