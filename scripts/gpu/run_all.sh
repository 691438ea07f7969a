#!/usr/bin/env bash
# The one script for a GPU-machine call: builds Kestrel with the CUDA backend (-j16), writes synthetic
# models with `kestrel synth`, runs the CUDA tests (ops harness CUDA cases, GPU sampling, the executor's
# checks on the GPU, whole-model checks: logits vs transformers, greedy CPU == GPU), `kestrel bench
# --device cuda` on the llama3-8b preset with the transformers peer in the same run, and writes logs and
# JSON under $OUT (default ./gpu-out).
#   scripts/gpu/run_all.sh [--quick] [--filter GTEST_FILTER] [--no-bench] [--no-peer] [--kernels] [--commit HASH]
#                          [--prebuilt DIR] [--server-tests]
#   --server-tests also runs tests/py/test_server.py against `kestrel serve --device cuda` on the small synth
#   model (the openai client and its needs come from .whl/ wheels where the machine lacks them).
#   With the bench, `kestrel bench --batch-invariant` runs too (the invariant mode's cost).
#   --kernels also runs the kernel benchmarks (bench/cuda/ops_bench.cpp and bench/peers/torch_attention.py);
#   --no-peer skips the transformers peer (a quicker iteration; final numbers need it).
#   --commit HASH records HASH as the measured commit: the device's copy of the tree may carry a stale .git,
#   so pass the hash you committed (literally; a $(git ...) in the device command runs there).
#   --prebuilt DIR runs the binaries in DIR (kestrel, kestrel_tests and, with --kernels, kestrel_cuda_bench,
#   built elsewhere with an sm_90 target — the default 90a+80 does — and carried along) instead of
#   building: saves the build's device time.
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-$PWD/gpu-out}"
mkdir -p "$out"
quick=""
filter='Cuda*:Executor*:OpsHarness.*:BatchInvariance.*'
server_tests=0
bench=1
peer=1
kernels=0
commit=""
prebuilt=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick="--quick" ;;
    --filter) filter="$2"; shift ;;
    --no-bench) bench=0 ;;
    --no-peer) peer=0 ;;
    --kernels) kernels=1 ;;
    --commit) commit="$2"; shift ;;
    --prebuilt) prebuilt="$2"; shift ;;
    --server-tests) server_tests=1 ;;
  esac
  shift
done
export PATH=/usr/local/cuda/bin:$PATH
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
if [ -n "$commit" ]; then
  echo "commit: $commit (given with --commit)" | tee -a "$out/device.txt"
else
  echo "commit: unknown (pass --commit; this copy's git HEAD is $(git rev-parse --short HEAD 2>/dev/null || echo none), possibly stale)" |
    tee -a "$out/device.txt"
fi

# Build dependencies unpacked by scripts/gpu/fetch_deps.sh (the GPU machine has no network).
if [ -d deps/usr ]; then
  deps="$PWD/deps/usr"
  export CMAKE_PREFIX_PATH="$deps${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export PKG_CONFIG_PATH="$deps/lib/x86_64-linux-gnu/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$PWD/deps"
  export LD_LIBRARY_PATH="$deps/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

if [ -n "$prebuilt" ]; then
  build="$(cd "$prebuilt" && pwd)"
  needed="kestrel kestrel_tests"
  [ "$kernels" = 1 ] && needed="$needed kestrel_cuda_bench"
  for b in $needed; do
    [ -x "$build/$b" ] || { echo "--prebuilt $prebuilt has no $b"; exit 1; }
  done
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64"
  echo "prebuilt binaries from $prebuilt"
else
  build="${KESTREL_GPU_BUILD:-/tmp/kestrel-build-gpu}"  # outside the tree: survives re-sent working trees
  targets="kestrel kestrel_tests"
  [ "$kernels" = 1 ] && targets="$targets kestrel_cuda_bench"
  # Only the CUDA architecture of this machine: halves the build time.
  t0=$(date +%s)
  if ! { cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a >"$out/build.log" 2>&1 &&
         cmake --build "$build" -j16 --target $targets >>"$out/build.log" 2>&1; }; then
    echo "BUILD FAILED"; grep -E "error|FAILED" "$out/build.log" | head -30; exit 1
  fi
  echo "build ok ($(( $(date +%s) - t0 )) s)"
fi
k="$build/kestrel"

# Synthetic models (page cache, not the repo). The 8B one is timed: the synth speed target.
models=/tmp/kestrel-synth
mkdir -p "$models"
"$k" synth --preset small --seed 1 --out "$models/small" | tail -1
"$k" synth --preset llama3.2-1b --seed 1 --out "$models/llama3.2-1b" | tail -1
[ "$bench" = 1 ] && "$k" synth --preset llama3-8b --seed 1 --out "$models/llama3-8b" | tail -1

# The other families at their real widths with 2 layers: Qwen2 (q/k/v bias, 28/4 heads), Qwen3 (q/k norm),
# Mistral. Each model's logits are checked against transformers.
logit_dirs=("$models/llama3.2-1b")
for preset in qwen2.5-7b qwen3-8b mistral-7b; do
  "$k" synth --preset "$preset" --layers 2 --seed 1 --out "$models/$preset-2l" | tail -1
  logit_dirs+=("$models/$preset-2l")
done
for d in "${logit_dirs[@]}"; do
  python3 scripts/gpu/reference_logits.py --model "$d" --out "$d.ref" 2>&1 | tail -3
done
refs=("${logit_dirs[@]/%/.ref}")

KESTREL_SYNTH_LOGITS_DIR="$(IFS=:; echo "${logit_dirs[*]}")" KESTREL_SYNTH_LOGITS_REF="$(IFS=:; echo "${refs[*]}")" \
  KESTREL_SYNTH_GREEDY_DIR="$models/small" KESTREL_SOURCE_DIR="$PWD" \
  timeout 300 "$build/kestrel_tests" --gtest_filter="$filter" >"$out/tests.log" 2>&1
rc=$?
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|Failure|vs transformers|greedy:|Expected|Which is|Google Test trace|cuda_model_test" "$out/tests.log" | head -60
echo "tests rc=$rc"

if [ "$server_tests" = 1 ]; then
  site=""
  if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && site=/tmp/site
  fi
  PYTHONPATH="$site" KESTREL_BIN="$k" KESTREL_MODEL="$models/small" KESTREL_SERVE_ARGS="--device cuda" \
    timeout 600 python3 -m pytest -q tests/py/test_server.py >"$out/server_tests.log" 2>&1
  echo "server tests (GPU) rc=$?"
  tail -15 "$out/server_tests.log"
fi

# Streamed text on the GPU (CUDA graphs + GPU sampling) from the small synthetic model.
"$k" run --device cuda -m "$models/small" --raw -n 64 --ignore-eos "the quick brown fox" 2>&1 | tail -3

if [ "$bench" = 1 ]; then
  "$k" bench --device cuda -m "$models/llama3-8b" -p 512 -p 8192 -n 128 -B 1 -B 8 -B 32 -B 128 -r 3 \
    --json "$out/kestrel_bench.json" 2>&1 | tee "$out/bench.log"
  # The cost of batch-invariant mode (fixed-reduction GEMM for every M, per-sequence decode splits).
  "$k" bench --device cuda -m "$models/llama3-8b" -p 512 -p 8192 -n 128 -B 1 -B 8 -B 32 -B 128 -r 3 --batch-invariant \
    --json "$out/kestrel_bench_invariant.json" 2>&1 | tee -a "$out/bench.log"
  [ "$peer" = 1 ] && python3 bench/peers/transformers_peer.py --model "$models/llama3-8b" \
    --json "$out/transformers_peer.json" 2>&1 | tee -a "$out/bench.log"
fi
if [ "$kernels" = 1 ]; then
  python3 bench/peers/torch_attention.py $quick --json "$out/torch_peers.json" 2>&1 | tee "$out/peers.log"
  copy=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['copy_gb_per_s'])" "$out/torch_peers.json" 2>/dev/null || echo 0)
  timeout 400 "$build/kestrel_cuda_bench" $quick --copy-ceiling "$copy" --json "$out/kestrel_cuda_bench.json" 2>&1 |
    tee -a "$out/peers.log"
fi
exit $rc
