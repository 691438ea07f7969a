#!/usr/bin/env bash
# Builds llama.cpp (CPU only, Release) from the copy vendored in the llama-cpp-python sdist, pinned to one
# version so the peer numbers and the golden fixtures can be reproduced. Everything lives outside the repo:
#   $KESTREL_CACHE/src/llama_cpp_python-<ver>/   unpacked sdist (vendor/llama.cpp, the llama_cpp ctypes package)
#   $KESTREL_CACHE/llama.cpp-build/              CMake build; binaries in bin/, libllama.so etc. in bin/
# Usage: scripts/reference/build_llama_cpp.sh        (prints the build dir on the last line)
# Env: KESTREL_CACHE (default ~/.cache/kestrel), LLAMA_CPP_PYTHON_VERSION, JOBS (default 2),
#      GGML_NATIVE (default ON: a local peer may use every ISA extension of this CPU).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
. "$repo/scripts/verify_sha256.sh"

version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"  # the release scripts/pinned/llama_cpp_python.sha256 records
cache="${KESTREL_CACHE:-$HOME/.cache/kestrel}"
jobs="${JOBS:-2}"
src_root="$cache/src/llama_cpp_python-$version"
build="$cache/llama.cpp-build"

if [ ! -f "$src_root/vendor/llama.cpp/CMakeLists.txt" ]; then
  mkdir -p "$cache/src"
  python3 -m pip download -q --no-deps --no-binary :all: --disable-pip-version-check \
    "llama-cpp-python==$version" -d "$cache/src"
  if grep -q " llama_cpp_python-$version.tar.gz$" "$repo/scripts/pinned/llama_cpp_python.sha256"; then
    verify_sha256 "$cache/src" <"$repo/scripts/pinned/llama_cpp_python.sha256"
  else
    echo "build_llama_cpp: llama-cpp-python $version is not the pinned release: its sdist is not checked" >&2
  fi
  tar -xzf "$cache/src/llama_cpp_python-$version.tar.gz" -C "$cache/src"
fi

# Shared libraries so the llama_cpp ctypes package of the same sdist can load libllama.so
# (LLAMA_CPP_LIB_PATH) without pip building llama.cpp a second time.
cmake -S "$src_root/vendor/llama.cpp" -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE="${GGML_NATIVE:-ON}" \
  -DGGML_CUDA=OFF -DGGML_METAL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
cmake --build "$build" -j "$jobs" --target llama llama-perplexity llama-bench llama-tokenize
echo "$build"
