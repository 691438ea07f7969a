#!/usr/bin/env bash
# The one script for a GPU-machine call: builds Kestrel with the CUDA backend (-j16), runs the CUDA
# ops tests, the kernel benchmarks and the torch peer script in the same run, and writes logs and JSON
# under $OUT (default ./gpu-out).
#   scripts/gpu/run_all.sh [--quick] [--filter GTEST_FILTER] [--no-bench]
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-$PWD/gpu-out}"
mkdir -p "$out"
quick=""
filter='Cuda*'
bench=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick="--quick" ;;
    --filter) filter="$2"; shift ;;
    --no-bench) bench=0 ;;
  esac
  shift
done
export PATH=/usr/local/cuda/bin:$PATH
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
git_rev=$(git rev-parse --short HEAD 2>/dev/null || cat .gpu-commit 2>/dev/null || echo unknown)
echo "commit: $git_rev" | tee -a "$out/device.txt"

# Build dependencies unpacked by scripts/gpu/fetch_deps.sh (the GPU machine has no network).
if [ -d deps/usr ]; then
  deps="$PWD/deps/usr"
  export CMAKE_PREFIX_PATH="$deps${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export PKG_CONFIG_PATH="$deps/lib/x86_64-linux-gnu/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$PWD/deps"
  export LD_LIBRARY_PATH="$deps/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

build="${KESTREL_GPU_BUILD:-/tmp/kestrel-build-gpu}"  # outside the tree: survives re-sent working trees
# Only the CUDA architecture of this machine: halves the build time.
if ! { cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a >"$out/build.log" 2>&1 &&
       cmake --build "$build" -j16 --target kestrel_tests kestrel_cuda_bench >>"$out/build.log" 2>&1; }; then
  echo "BUILD FAILED"; tail -40 "$out/build.log"; exit 1
fi
echo "build ok"

timeout 300 "$build/kestrel_tests" --gtest_filter="$filter" >"$out/tests.log" 2>&1
rc=$?
grep -E "^\[  (PASSED|FAILED) |FAILED|Failure|nmse|Expected|Which is" "$out/tests.log" | head -60
echo "tests rc=$rc"

if [ "$bench" = 1 ]; then
  # Peer first: its copy kernel rate joins our cudaMemcpy rate as the copy ceiling (the higher wins).
  PYTHONUNBUFFERED=1 python3 bench/peers/torch_attention.py $quick --json "$out/torch_peers.json" 2>&1 |
    tee "$out/peers.log"
  copy=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['copy_gb_per_s'])" "$out/torch_peers.json" 2>/dev/null || echo 0)
  timeout 400 "$build/kestrel_cuda_bench" $quick --copy-ceiling "$copy" --json "$out/kestrel_cuda_bench.json" 2>&1 |
    tee "$out/bench.log"
fi
exit $rc
