// Tests that need a download scripts/setup.sh caches (the default model, tokenizer vocabularies) skip
// without it, except under CI=true (.ci/run sets it): CI has run setup, so a skip there would be a test that
// silently never ran. tests/py/conftest.py applies the same rule to the Python tests.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <string_view>

namespace kestrel::test {

inline bool in_ci() {
  const char* ci = std::getenv("CI");
  return ci && std::string_view(ci) == "true";
}

}  // namespace kestrel::test

// In a test body: KS_SKIP_OR_FAIL("why" << more); skips, or fails under CI=true, and returns either way.
#define KS_SKIP_OR_FAIL(msg)                                                                   \
  do {                                                                                         \
    if (::kestrel::test::in_ci()) FAIL() << msg << " (CI=true: this test must run, not skip)"; \
    GTEST_SKIP() << msg;                                                                       \
  } while (0)
