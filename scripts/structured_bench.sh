#!/usr/bin/env bash
# Structured-output overhead: starts `kestrel serve` on MODEL and runs bench/serving/structured_overhead.py
# (decode speed with a JSON schema against free text, at concurrency 1 and 16), writing JSON to OUT_JSON.
#   [REQUESTS=16] scripts/structured_bench.sh KESTREL_BINARY MODEL DEVICE OUT_JSON [CONCURRENCY...]
# e.g. scripts/structured_bench.sh build/kestrel ~/.cache/kestrel/SmolLM2-135M-Instruct.Q4_1.gguf cpu /tmp/so.json 1 4
set -uo pipefail
if [ $# -lt 4 ]; then
  echo "usage: scripts/structured_bench.sh KESTREL_BINARY MODEL DEVICE OUT_JSON [CONCURRENCY...]" >&2
  exit 2
fi
k="$1" model="$2" device="$3" json="$4"
shift 4
conc=("$@")
[ ${#conc[@]} -eq 0 ] && conc=(1 16)
cd "$(dirname "$0")/.."
port=8125
log="${json%.json}.serve.log"
"$k" serve -m "$model" --device "$device" --port "$port" -c 4096 --max-running 64 >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  kill -0 "$pid" 2>/dev/null || { echo "server exited"; tail -20 "$log"; exit 1; }
  sleep 1
done
python3 bench/serving/structured_overhead.py --base-url "http://127.0.0.1:$port" --concurrency "${conc[@]}" \
  --requests "${REQUESTS:-16}" --max-tokens 256 --result-json "$json"
rc=$?
kill -TERM "$pid"
wait "$pid"
exit $rc
