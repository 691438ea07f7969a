#!/usr/bin/env bash
# W4A16 g128 (GPTQ/AWQ codes) on the GPU in one device call (~4 min): the CUDA tests of the grouped paths, the
# w4a16-g128 matmuls of kestrel_cuda_bench against cuBLAS bf16, torch's int4 kernel (bench/peers/
# torch_int4pack.py) as the peer, and `kestrel bench` on a llama3-8b synth model rounded to 4 bits in groups
# of 128 (`kestrel quantize --method rtn`, written meanwhile) against the same model in bf16.
#   scripts/gpu/w4a16_bench.sh DIR [ops]   (DIR holds kestrel, kestrel_tests, kestrel_cuda_bench: plain or
#   .xz; `ops`: the tests, the matmuls and the torch peer only, ~2 min, no end-to-end runs; W4_TESTS, when
#   set, is the tests' gtest filter)
# Writes under $OUT: tests.log, ops.json/.log, torch_int4.json/.log, w4_e2e.json, w4_gmv_e2e.json (batch 1
# with the matmuls forced to cuda.gmv), bf16_e2e.json, and
# w4a16.json (all of them in one record with card, commit, date and command).
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-$PWD/gpu-out}"
bin="$1"
only_ops="${2:-}"
mkdir -p "$out"
source scripts/gpu/prebuilt_bins.sh
use_prebuilt "$bin" kestrel kestrel_tests kestrel_cuda_bench
export KESTREL_SOURCE_DIR="$PWD"
card=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)
echo "$card"
synth=""
if [[ -z "$only_ops" ]]; then
  (timeout 150 /tmp/kb/kestrel synth --preset llama3-8b -o /tmp/l3 -t 8 &&
    timeout 240 /tmp/kb/kestrel quantize --method rtn --bits 4 --group 128 -m /tmp/l3 -o /tmp/l3q4 -t 12) \
    >"$out/synth.log" 2>&1 &
  synth=$!
fi
timeout 150 /tmp/kb/kestrel_tests --gtest_filter="${W4_TESTS:-OpsHarness.Matmul:OpsHarness.ScatterRows:CudaModel*:Cuda*:ExecutorCuda*}" \
  >"$out/tests.log" 2>&1
grep -E "FAILED|PASSED|Failure" "$out/tests.log" | head -20
timeout 150 /tmp/kb/kestrel_cuda_bench --filter w4a16-g128 --m 1,2,4,8,16,128,256 --json "$out/ops.json" \
  >"$out/ops.log" 2>&1
grep -E "speedup|sum" "$out/ops.log" | head -60
timeout 60 python3 bench/peers/torch_int4pack.py --m 1,2,4,8,16,128,256 --json "$out/torch_int4.json" \
  >"$out/torch_int4.log" 2>&1
tail -7 "$out/torch_int4.log"
if [[ -n "$synth" ]]; then
  wait "$synth"
  tail -1 "$out/synth.log" | cut -c1-200
  timeout 100 /tmp/kb/kestrel bench --device cuda -m /tmp/l3q4 -p 512 -n 128 -B 1 -B 8 -B 32 -r 2 \
    --json "$out/w4_e2e.json" 2>&1 | tail -5
  timeout 60 /tmp/kb/kestrel bench --device cuda -m /tmp/l3q4 -p 512 -n 128 -B 1 -r 2 --variant matmul=cuda.gmv \
    --json "$out/w4_gmv_e2e.json" 2>&1 | tail -3
  timeout 80 /tmp/kb/kestrel bench --device cuda -m /tmp/l3 -p 512 -n 128 -B 1 -B 8 -B 32 -r 2 \
    --json "$out/bf16_e2e.json" 2>&1 | tail -5
fi
python3 - "$out" "$card" "$(cat "$bin/commit" 2>/dev/null || echo unknown)" "$only_ops" <<'PY'
import datetime, json, pathlib, sys
out, card, commit = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
rec = {"card": card, "commit": commit, "date": datetime.date.today().isoformat(),
       "command": "scripts/gpu/w4a16_bench.sh DIR" + (" ops" if len(sys.argv) > 4 and sys.argv[4] else "")}
for name in ["ops", "torch_int4", "w4_e2e", "w4_gmv_e2e", "bf16_e2e"]:
    p = out / f"{name}.json"
    rec[name] = json.loads(p.read_text()) if p.exists() else None
(out / "w4a16.json").write_text(json.dumps(rec, indent=1))
PY
