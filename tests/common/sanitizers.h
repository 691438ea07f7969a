// scripts/test.sh runs the whole suite a second time under AddressSanitizer + UBSan. Tests that run the
// default model over every fixture prompt take minutes there; under a sanitizer they run a subset of the
// prompts: the same code paths (memory safety is what that run checks), a fraction of the time. The
// Release run checks the numbers on all of them.
#pragma once

#include <cstddef>

namespace kestrel::test {

#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif

// Whether fixture case `i` runs: every case normally, every fifth under a sanitizer.
inline bool runs_case(size_t i) {
  return !kSanitized || i % 5 == 0;
}

}  // namespace kestrel::test
