// Every test binary registers the built-in backends once at start-up, as the CLI does through
// backends::make_context(): tests also build contexts by hand (ops::Context{} for the CPU).
#include "backends/backends.h"

namespace {
const bool installed = [] {
  kestrel::backends::install();
  return true;
}();
}  // namespace
