#!/usr/bin/env bash
# Batch-1 and batch-32 decode plus pp512 on the GPU for each named synth preset (default: the families
# besides llama3-8b), one model on disk at a time. Writes $OUT/bench_<preset>.json; exits non-zero if any
# preset failed.
#   scripts/gpu/bench_presets.sh KESTREL_BINARY [PRESET ...]
set -uo pipefail
if [ $# -lt 1 ]; then
  echo "usage: scripts/gpu/bench_presets.sh KESTREL_BINARY [PRESET ...]" >&2
  exit 2
fi
k="$1"
shift
presets=(qwen2.5-7b qwen3-8b mistral-7b)
[ $# -gt 0 ] && presets=("$@")
out="${OUT:-$PWD/gpu-out}"
mkdir -p "$out"
failed=0
for p in "${presets[@]}"; do
  dir="/tmp/kestrel-synth/bench-$p"
  if "$k" synth --preset "$p" --seed 1 --out "$dir" | tail -1 &&
     "$k" bench --device cuda -m "$dir" -p 512 -n 128 -B 1 -B 32 -r 3 --json "$out/bench_$p.json" 2>&1 | grep -v "^$"; then
    :
  else
    echo "$p: FAILED"
    failed=1
  fi
  rm -rf "$dir"
done
exit $failed
