#!/usr/bin/env bash
# Serving, Kestrel against llama.cpp's llama-server, on the GPU machine: both serve the same F16 GGUF
# (Llama-3-8B shape, random weights, the real Llama-3 vocabulary, written by the llama.cpp peer recipe)
# to the same client (bench/serving/load_client.py, the same seed and workload), one server at a time.
# Reports go to $OUT/serve_<server>_rate_<R>.json, server logs beside them.
#   scripts/gpu/serve_compare.sh PEERDIR SERVERS NUM_PROMPTS RATE...
#     PEERDIR: the folder ../shared/tools/llamacpp-gpu/pack.sh filled (carried along); its build_on_gpu.sh
#              builds llama.cpp and the GGUF under /tmp/lc once per machine (~5.5 min)
#     SERVERS: kestrel, llamacpp or both (a machine keeps /tmp between calls while it stays warm, so the
#              build, each server's runs and the other server's runs can be separate calls)
#   KESTREL_BIN=PATH: a kestrel built elsewhere with an sm_90 target (default: build/kestrel).
#   MAX_RUNNING=N: Kestrel's --max-running (default 128, as llama-server's -np); TAG names its reports.
#   GGUF_ONLY=1: write the GGUF without building llama.cpp (for Kestrel-only calls on a fresh machine).
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-$PWD/gpu-out}"
mkdir -p "$out"
peer="$1" which="$2" n="$3"
shift 3
rates=("$@")
export PATH=/usr/local/cuda/bin:$PATH NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1
k="${KESTREL_BIN:-$PWD/build/kestrel}"
gguf=/tmp/lc/l3-f16.gguf
server_bin=/tmp/lc/llama.cpp/build/bin/llama-server
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$out/device.txt"

if [ -n "${GGUF_ONLY:-}" ] && [ ! -s "$gguf" ]; then
  mkdir -p /tmp/lc && tar -xJf "$peer/llamacpp-src.tar.xz" -C /tmp/lc llama.cpp/gguf-py &&
    PYTHONPATH=/tmp/lc/llama.cpp/gguf-py python3 "$peer/make_llama3_gguf.py" "$peer/ggml-vocab-llama-bpe.gguf" "$gguf" 32
elif [ ! -x "$server_bin" ] || [ ! -s "$gguf" ]; then
  bash "$peer/build_on_gpu.sh" "$peer" 2>&1 | tail -3
fi
[ -s "$gguf" ] || { echo "no GGUF at $gguf"; exit 1; }

# Starts a server (the rest of the arguments), waits for /health, runs the client at every rate, stops it.
serve_and_measure() {
  local name="$1" port="$2"
  shift 2
  "$@" >"$out/${name}_server.log" 2>&1 &
  local pid=$! t0
  t0=$(date +%s)
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
    kill -0 "$pid" 2>/dev/null || { echo "$name exited"; tail -20 "$out/${name}_server.log"; return 1; }
    sleep 1
  done
  echo "== $name ready after $(( $(date +%s) - t0 )) s"
  for r in "${rates[@]}"; do
    echo "== $name, request rate $r"
    timeout 400 python3 bench/serving/load_client.py --base-url "http://127.0.0.1:$port" --num-prompts "$n" \
      --request-rate "$r" --slo-ttft-ms 1000 --slo-tpot-ms 50 --seed 1 \
      --result-json "$out/serve_${name}_rate_$r.json" | grep -E "throughput|TTFT|TPOT|ITL|Completed|Failed" | head -20
  done
  curl -s "http://127.0.0.1:$port/metrics" >"$out/${name}_metrics.txt"
  kill -TERM "$pid"
  wait "$pid"
  echo "$name exit $?"
}

if [ "$which" = kestrel ] || [ "$which" = both ]; then
  # 200K tokens of KV (bf16, 128 KiB each = 25 GiB) so 128 sequences fit at once.
  serve_and_measure "kestrel${TAG:-}" 8123 "$k" serve -m "$gguf" --device cuda --port 8123 -c 4096 \
    --max-running "${MAX_RUNNING:-128}" \
    --kv-cache-tokens 200000
fi
if [ "$which" = llamacpp ] || [ "$which" = both ]; then
  # 128 slots of 1024 tokens: the workload's longest prompt plus answer fits one slot.
  serve_and_measure llamacpp 8124 "$server_bin" -m "$gguf" -ngl 99 -fa on -np 128 -c $((128 * 1024)) --port 8124
fi
