#!/usr/bin/env bash
# GPU serving benchmark for one device call: builds `kestrel` (CUDA), writes the llama3-8b synthetic
# model, starts `kestrel serve --device cuda` and drives it with bench/serving/load_client.py at several
# request rates, writing each report as JSON under $OUT. Build dependencies come from deps/ (see
# scripts/gpu/fetch_deps.sh); aiohttp for the client from .whl/ wheels when the machine lacks it.
#   scripts/gpu/serve_bench.sh [NUM_PROMPTS] [RATES...]
# KESTREL_BIN=PATH runs a kestrel built elsewhere (with an sm_90 target) instead of building one;
# SERVE_ARGS adds server flags, MAX_RUNNING sets --max-running (128), KV_TOKENS --kv-cache-tokens (200000),
# TAG names the reports (serve_<TAG>rate_R.json).
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-$PWD/gpu-out}"
mkdir -p "$out"
n="${1:-200}"
shift || true
rates=("$@")
[ ${#rates[@]} -eq 0 ] && rates=(4 16 inf)
export PATH=/usr/local/cuda/bin:$PATH NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1
if [ -d deps/usr ]; then
  deps="$PWD/deps/usr"
  export CMAKE_PREFIX_PATH="$deps" PKG_CONFIG_PATH="$deps/lib/x86_64-linux-gnu/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$PWD/deps"
  export LD_LIBRARY_PATH="$deps/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
if ! python3 -c "import aiohttp" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
build=/tmp/kestrel-serve-build
if [ -n "${KESTREL_BIN:-}" ]; then
  k="$KESTREL_BIN"
elif ! { cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a -DKESTREL_TESTS=OFF \
         >"$out/build.log" 2>&1 && cmake --build "$build" -j16 --target kestrel >>"$out/build.log" 2>&1; }; then
  echo "BUILD FAILED"; grep -E "error|FAILED" "$out/build.log" | head -30; exit 1
else
  k="$build/kestrel"
fi
[ -f /tmp/kestrel-synth/llama3-8b/config.json ] ||
  "$k" synth --preset llama3-8b --seed 1 --out /tmp/kestrel-synth/llama3-8b | tail -1
port=8123
# KV budget: 200K tokens (bf16, 128 KiB each for llama3-8b = 25 GiB) so 128 sequences fit at once.
"$k" serve -m /tmp/kestrel-synth/llama3-8b --device cuda --port "$port" -c 4096 --max-running "${MAX_RUNNING:-128}" \
  --kv-cache-tokens "${KV_TOKENS:-200000}" ${SERVE_ARGS:-} \
  >"$out/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 180); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  kill -0 "$pid" 2>/dev/null || { echo "server exited"; tail -20 "$out/serve.log"; exit 1; }
  sleep 1
done
for r in "${rates[@]}"; do
  echo "== request rate $r"
  timeout 240 python3 bench/serving/load_client.py --base-url "http://127.0.0.1:$port" --num-prompts "$n" \
    --request-rate "$r" --slo-ttft-ms 1000 --slo-tpot-ms 50 --seed 1 --result-json "$out/serve_${TAG:-}rate_$r.json" | tail -25
done
curl -s "http://127.0.0.1:$port/metrics" >"$out/${TAG:-}metrics.txt"
kill -TERM "$pid"; wait "$pid"; echo "server exit $?"
tail -5 "$out/serve.log"
