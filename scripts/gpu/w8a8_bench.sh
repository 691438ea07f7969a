#!/usr/bin/env bash
# W8A8 (`--quantization fp8|int8`: the blocks' linears quantized at load, per-channel weight scales,
# per-token activation scales, cuBLASLt's 8-bit GEMMs) against bf16 on a llama3-8b synth model in one device
# call (~3 min): prefill pp2048 and decode at batch 1 and 32, each format in its own `kestrel bench` run.
#   scripts/gpu/w8a8_bench.sh BIN_DIR [MODEL_DIR]
# BIN_DIR holds kestrel (plain or .xz; lib/ for shared libraries the machine lacks). MODEL_DIR: a llama3-8b
# synth model already written (else written here, ~1 min). Writes $OUT/w8a8.json (card, commit, date, command
# and each format's bench JSON).
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-$PWD/gpu-out}"
bin="$1"
model="${2:-}"
mkdir -p "$out"
source scripts/gpu/prebuilt_bins.sh
use_prebuilt "$bin" kestrel
card=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)
echo "$card"
if [[ -z "$model" ]]; then
  model=/tmp/l3
  [[ -f $model/config.json ]] || timeout 150 /tmp/kb/kestrel synth --preset llama3-8b -o $model -t 16 >/dev/null 2>&1
fi
for q in bf16 fp8 int8; do
  flag=()
  [[ $q != bf16 ]] && flag=(--quantization "$q")
  timeout 150 /tmp/kb/kestrel bench --device cuda -m "$model" "${flag[@]}" -p 2048 -n 128 -B 1 -B 32 -r 2 \
    --json "/tmp/w8a8_$q.json" 2>&1 | tail -6
done
python3 - "$out" "$card" "$(cat "$bin/commit" 2>/dev/null || echo unknown)" <<'PY'
import datetime, json, pathlib, sys
out, card, commit = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
rec = {"card": card, "commit": commit, "date": datetime.date.today().isoformat(),
       "command": "scripts/gpu/w8a8_bench.sh BIN"}
for q in ["bf16", "fp8", "int8"]:
    p = pathlib.Path(f"/tmp/w8a8_{q}.json")
    rec[q] = json.loads(p.read_text()) if p.exists() else None
(out / "w8a8.json").write_text(json.dumps(rec, indent=1))
PY
