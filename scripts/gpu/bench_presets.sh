#!/usr/bin/env bash
# Batch-1 and batch-32 decode plus pp512 on the GPU for each named synth preset (default: the families
# besides llama3-8b), one model on disk at a time. Writes $OUT/bench_<preset>.json.
#   scripts/gpu/bench_presets.sh KESTREL_BINARY [PRESET ...]
set -uo pipefail
k="$1"; shift
presets=("$@")
[ ${#presets[@]} -eq 0 ] && presets=(qwen2.5-7b qwen3-8b mistral-7b)
out="${OUT:-$PWD/gpu-out}"
mkdir -p "$out"
for p in "${presets[@]}"; do
  dir="/tmp/kestrel-synth/bench-$p"
  "$k" synth --preset "$p" --seed 1 --out "$dir" | tail -1
  "$k" bench --device cuda -m "$dir" -p 512 -n 128 -B 1 -B 32 -r 3 --json "$out/bench_$p.json" 2>&1 | grep -v "^$"
  rm -rf "$dir"
done
