#!/usr/bin/env bash
# Runs every test: the C++ unit/golden tests (ctest), the parser tests under ASan/UBSan, and the
# Python end-to-end tests. Expects scripts/setup.sh to have run.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

cmake --build build -j "$jobs"
(cd build && ctest --output-on-failure -j "$jobs")

# Parsers and tokenizers again under AddressSanitizer + UBSan, including truncated and byte-flipped files.
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DKESTREL_SANITIZE=ON -DKESTREL_CUDA=OFF >/dev/null
cmake --build build-asan -j "$jobs" --target kestrel_tests
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ./build-asan/kestrel_tests --gtest_filter='Gguf*:Safetensors*:HfConfig*:Tokenizer*:ChatTemplate*:Fuzz*:Http*:ModelLoad*'

if ls tests/py/test_*.py >/dev/null 2>&1; then
  python3 -m pytest -q tests/py
fi
