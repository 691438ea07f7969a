#!/usr/bin/env bash
# Populates the tokenizer test cache with real vocabularies (too large to commit):
#   $KESTREL_CACHE/vocab/ggml-vocab-{gpt-2,llama-bpe,qwen2,llama-spm}.gguf (+ .inp/.out reference ids)
#     from the llama-cpp-python sdist on PyPI, which vendors llama.cpp's models/ folder.
# Tests that need these skip with a message when they are absent. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${KESTREL_CACHE:-$HOME/.cache/kestrel}"
dir="$cache/vocab"
names=(gpt-2 llama-bpe qwen2 llama-spm)
mkdir -p "$dir"

missing=0
for n in "${names[@]}"; do [ -s "$dir/ggml-vocab-$n.gguf" ] || missing=1; done
if [ "$missing" = 1 ]; then
  echo "fetch_test_vocabs: downloading the llama-cpp-python sdist (vocab-only GGUFs)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --no-deps --no-binary :all: --disable-pip-version-check llama-cpp-python -d "$tmp"
  sdist=$(ls "$tmp"/llama_cpp_python-*.tar.gz | head -1)
  patterns=(--wildcards)
  for n in "${names[@]}"; do patterns+=("*/vendor/llama.cpp/models/ggml-vocab-$n.gguf*"); done
  tar -xzf "$sdist" -C "$tmp" "${patterns[@]}"
  src=$(ls -d "$tmp"/llama_cpp_python-*/vendor/llama.cpp)
  cp "$src"/models/ggml-vocab-* "$dir"/
fi
echo "fetch_test_vocabs: vocabularies ready in $dir"
