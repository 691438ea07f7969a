#!/usr/bin/env bash
# Issue 14's GPU runs in one device call, with prebuilt binaries (carried under DIR: kestrel, kestrel_tests,
# kestrel_cuda_bench, built here with the default sm_90a target): the ops harness's attention and cache-write
# cases (every CUDA variant over every page format against the CPU reference), the attention kernels over
# each --kv-type at the issue's decode shapes (1x32K, 1x128K, 32x8K) beside torch SDPA and the copy ceiling
# measured in the same call, and `kestrel bench` decode speed of the llama3-8b shape after 128K
# context tokens per format. With --largest (alone it skips the rest), decode after the longest contexts: each
# format at the --largest-depths given (1M tokens by default), the context filled with random K/V
# (`kestrel bench --random-depth`): a context that does not fit fails with the allocation's error. Logs and
# JSON go under $OUT (default ./gpu-out), in at most 6 files (the device tool returns only a few): run.log
# (everything printed), tests.log, kernels.json, torch.json, e2e.json, largest.json.
#   scripts/gpu/kv_formats.sh DIR [--commit HASH] [--formats "bf16 fp8 int8 int4 int2"] [--depths "131072"]
#                                 [--no-tests] [--no-kernels] [--no-e2e] [--largest "int2:1048576 ..."]
set -uo pipefail
cd "$(dirname "$0")/../.."
bin="$(cd "$1" && pwd)"
shift
out="${OUT:-$PWD/gpu-out}"
mkdir -p "$out"
commit=unknown
formats="bf16 fp8 int8 int4 int2"
depths="131072"
tests=1
kernels=1
e2e=1
largest=""
while [ $# -gt 0 ]; do
  case "$1" in
    --commit) commit="$2"; shift ;;
    --formats) formats="$2"; shift ;;
    --depths) depths="$2"; shift ;;
    --no-tests) tests=0 ;;
    --no-kernels) kernels=0 ;;
    --no-e2e) e2e=0 ;;
    --largest) largest="$2"; tests=0; kernels=0; e2e=0; shift ;;
  esac
  shift
done
export LD_LIBRARY_PATH="$bin/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1
exec > >(tee "$out/run.log") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "commit: $commit; date: $(date -u +%F)"

if [ "$tests" = 1 ]; then
  "$bin/kestrel_tests" --gtest_filter='OpsHarness.Attention:OpsHarness.KvWrite:OpsHarness.RopeKvWrite:CudaOps.Attention*' \
    >"$out/tests.log" 2>&1
  echo "tests: exit $?"
  grep -E "Failure|FAILED|PASSED|tests ran" "$out/tests.log" | head -30
fi

if [ "$kernels" = 1 ]; then
  "$bin/kestrel_cuda_bench" --filter attention --json "$out/kernels.json" 2>&1
  timeout 300 python3 bench/peers/torch_attention.py --json "$out/torch.json" 2>&1 | grep -E "copy|attention"
fi

if [ "$e2e" = 1 ]; then
  models=/tmp/kestrel-synth
  mkdir -p "$models"
  "$bin/kestrel" synth --preset llama3-8b --seed 1 --out "$models/llama3-8b" | tail -1
  dflags=""
  for d in $depths; do dflags="$dflags -d $d"; done
  runs=$(mktemp -d)
  for f in $formats; do
    "$bin/kestrel" bench --device cuda -m "$models/llama3-8b" --kv-type "$f" -p 512 -n 64 $dflags -B 1 -r 2 \
      --json "$runs/$f.json" 2>&1
  done
  python3 -c 'import json, pathlib, sys; d = pathlib.Path(sys.argv[1])
print(json.dumps({p.stem: json.loads(p.read_text()) for p in sorted(d.glob("*.json"))}, indent=1))' "$runs" \
    >"$out/e2e.json"
fi

if [ -n "$largest" ]; then
  models=/tmp/kestrel-synth
  mkdir -p "$models"
  [ -d "$models/llama3-8b" ] || "$bin/kestrel" synth --preset llama3-8b --seed 1 --out "$models/llama3-8b" | tail -1
  runs=$(mktemp -d)
  for spec in $largest; do
    f="${spec%%:*}" d="${spec##*:}"
    "$bin/kestrel" bench --device cuda -m "$models/llama3-8b" --kv-type "$f" -p 1 -n 32 -d "$d" --random-depth -B 1 \
      -r 2 --json "$runs/$f-$d.json" 2>&1 | grep -vE "^\| pp1 "
    echo "$f at $d: exit ${PIPESTATUS[0]}"
  done
  python3 -c 'import json, pathlib, sys; d = pathlib.Path(sys.argv[1])
print(json.dumps({p.stem: json.loads(p.read_text()) for p in sorted(d.glob("*.json"))}, indent=1))' "$runs" \
    >"$out/largest.json"
fi
