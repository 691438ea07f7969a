#!/usr/bin/env bash
# Populates the tokenizer test cache with real vocabularies (too large to commit):
#   $KESTREL_CACHE/vocab/ggml-vocab-{gpt-2,llama-bpe,qwen2,llama-spm}.gguf (+ .inp/.out reference ids)
#     from the llama-cpp-python sdist on PyPI, which vendors llama.cpp's models/ folder.
# Pinned, release and files (scripts/pinned/test_vocabs.sha256): the tokenizer golden tests expect exactly
# these vocabularies. Tests that need them skip with a message when they are absent (fail under CI=true).
# Idempotent: files that are present and match are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/verify_sha256.sh
version=0.3.36  # the release scripts/pinned/llama_cpp_python.sha256 records
cache="${KESTREL_CACHE:-$HOME/.cache/kestrel}"
dir="$cache/vocab"
names=(gpt-2 llama-bpe qwen2 llama-spm)
mkdir -p "$dir"

if ! verify_sha256 "$dir" <scripts/pinned/test_vocabs.sha256 >/dev/null 2>&1; then
  echo "fetch_test_vocabs: downloading the llama-cpp-python $version sdist (vocab-only GGUFs)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --no-deps --no-binary :all: --disable-pip-version-check "llama-cpp-python==$version" \
    -d "$tmp"
  sdist="llama_cpp_python-$version.tar.gz"
  verify_sha256 "$tmp" <scripts/pinned/llama_cpp_python.sha256
  patterns=(--wildcards)
  for n in "${names[@]}"; do patterns+=("*/vendor/llama.cpp/models/ggml-vocab-$n.gguf*"); done
  tar -xzf "$tmp/$sdist" -C "$tmp" "${patterns[@]}"
  src="$tmp/llama_cpp_python-$version/vendor/llama.cpp/models"
  verify_sha256 "$src" <scripts/pinned/test_vocabs.sha256
  cp "$src"/ggml-vocab-* "$dir"/
fi
echo "fetch_test_vocabs: vocabularies ready in $dir"
