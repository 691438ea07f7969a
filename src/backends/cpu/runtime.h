// The CPU's execution lane: host memory, no queue (every call has finished when it returns), no graphs.
#pragma once

#include <memory>

#include "ops/runtime.h"

namespace kestrel::backends::cpu {

std::shared_ptr<ops::Runtime> make_runtime();

}  // namespace kestrel::backends::cpu
