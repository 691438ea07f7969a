// The built-in backends as a whole: registering their op variants with the dispatcher and creating
// execution lanes (ops/runtime.h). Everything above the backends (engine, CLI, tests) creates contexts
// through here and never includes a single backend's headers.
#pragma once

#include <memory>

#include "ops/context.h"
#include "ops/runtime.h"

namespace kestrel::backends {

// Registers every built-in backend's variants (once; thread-safe). make_runtime()/make_context() call it.
void install();
// Whether this build has the backend and the machine its hardware (the CPU always).
bool available(Device device);
// A new lane on `device` (its own queue, allocator and workspaces). Throws a clear error when the build
// or the machine lacks the device.
std::shared_ptr<ops::Runtime> make_runtime(Device device, const ops::LaneOptions& options = {});
// The process's shared lane for `device`, created on first use.
std::shared_ptr<ops::Runtime> default_runtime(Device device);
// A context on the default lane of `device`.
ops::Context make_context(Device device);

}  // namespace kestrel::backends
