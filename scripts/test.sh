#!/usr/bin/env bash
# Runs every test: the C++ unit/golden tests (ctest), the whole C++ suite again under ASan/UBSan, and the
# Python end-to-end tests. Expects scripts/setup.sh to have run.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

cmake --build build -j "$jobs"
(cd build && ctest --output-on-failure -j "$jobs")

# Every C++ test again under AddressSanitizer + UBSan (parsers fed truncated and byte-flipped files, kernels,
# engine, server); the build leaves out the CUDA backend, whose tests skip. -O1 instead of Debug's -O0 and a
# subset of the fixture prompts in the tests that run the default model over all of them
# (tests/common/sanitizers.h) keep the run to about three minutes on a 2-core CI machine; -g1 (line tables,
# all a sanitizer report's file:line needs) builds about a quarter faster than full debug info.
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-g1 -O1" -DKESTREL_SANITIZE=ON \
  -DKESTREL_CUDA=OFF >/dev/null
cmake --build build-asan -j "$jobs" --target kestrel_tests
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j "$jobs")

# The Python package (pyproject.toml: the engine's CPU backend and python/bindings.cpp, built in
# build/python), installed for tests/py/test_python_package.py.
python3 -m pip install -q --disable-pip-version-check . 2>&1 | grep -v "as the 'root' user" || true

if ls tests/py/test_*.py >/dev/null 2>&1; then
  python3 -m pytest -q tests/py
fi
