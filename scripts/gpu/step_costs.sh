#!/usr/bin/env bash
# Issue 10's step-cost runs in one device call, with prebuilt binaries (carried under DIR: kestrel,
# kestrel_cuda_bench, built here for sm_90a): what the server's steps cost on the llama3-8b shape (bf16) —
# decode at the batch sizes a saturated server runs, mixed steps (decode rows + prompt chunks, as under a
# backlog) against their halves alone, and the bf16 matmuls at the row counts those steps give cuBLASLt.
# Output under $OUT (default ./gpu-out): run.log, steps.json (`kestrel bench --mixed`), matmul.json.
#   scripts/gpu/step_costs.sh DIR [--commit HASH] [--batches "64 100 128"] [--depth 512]
#                                 [--mixed "256 1792"] [--ms 100,128,256,356,384,512,1024,1892,2048]
set -uo pipefail
cd "$(dirname "$0")/../.."
bin="$(cd "$1" && pwd)"
shift
out="${OUT:-$PWD/gpu-out}"
mkdir -p "$out"
commit=unknown
batches="64 100 128"
depth=512
mixed="256 1792"
ms="100,128,256,356,384,512,1024,1892,2048"
while [ $# -gt 0 ]; do
  case "$1" in
    --commit) commit="$2"; shift ;;
    --batches) batches="$2"; shift ;;
    --depth) depth="$2"; shift ;;
    --mixed) mixed="$2"; shift ;;
    --ms) ms="$2"; shift ;;
  esac
  shift
done
export LD_LIBRARY_PATH="$bin/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec > >(tee "$out/run.log") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "commit: $commit; date: $(date -u +%F)"
models=/tmp/kestrel-synth
mkdir -p "$models"
[ -d "$models/llama3-8b" ] || "$bin/kestrel" synth --preset llama3-8b --seed 1 --out "$models/llama3-8b" | tail -1
bflags="" mflags=""
for b in $batches; do bflags="$bflags -B $b"; done
for p in $mixed; do mflags="$mflags --mixed $p"; done
"$bin/kestrel" bench --device cuda -m "$models/llama3-8b" -p 256 -p 512 -n 16 $bflags -d "$depth" $mflags -r 3 \
  --json "$out/steps.json" 2>&1
"$bin/kestrel_cuda_bench" --filter bf16 --m "$ms" --json "$out/matmul.json" 2>&1 | grep -E "device|M="
