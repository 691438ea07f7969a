#!/usr/bin/env bash
# llama.cpp CPU speed peer: llama-bench prefill (pp) and decode (tg) on the same machine as a Kestrel run.
# Usage: bench/peers/llama_cpp_cpu.sh [MODEL.gguf] [THREADS] [OUT.json]
#   defaults: the default model in ~/.cache/kestrel, 2 threads, bench/results/llama_cpp_bench_<date>.json
# Builds llama.cpp first if needed (scripts/reference/build_llama_cpp.sh). Writes llama-bench's JSON
# (one object per test: n_prompt/n_gen, avg_ts tok/s, stddev_ts, samples) inside a wrapper that records
# the command, date, CPU and machine load, because on a shared machine the numbers are only as good as
# the load at the time.
set -euo pipefail
cd "$(dirname "$0")/../.."
cache="${KESTREL_CACHE:-$HOME/.cache/kestrel}"
model="${1:-$cache/SmolLM2-135M-Instruct.Q4_1.gguf}"
threads="${2:-2}"
out="${3:-bench/results/llama_cpp_bench_$(date +%F).json}"
bench="$cache/llama.cpp-build/bin/llama-bench"
[ -x "$bench" ] || scripts/reference/build_llama_cpp.sh >/dev/null
[ -f "$model" ] || { echo "model not found: $model (run scripts/setup.sh)" >&2; exit 1; }

cmd=("$bench" -m "$model" -t "$threads" -p 512 -n 128 -r 3 -o json)
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
"${cmd[@]}" >"$raw"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$raw" "$out" "$load_before" "$load_after" "${cmd[*]}" "$(nproc)" <<'PY'
import datetime, json, sys
raw, out, load_before, load_after, command, nproc = sys.argv[1:7]
runs = json.load(open(raw))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
result = {
    "tool": "llama-bench",
    "date": datetime.date.today().isoformat(),
    "command": command,
    "cpu": cpu,
    "loadavg_before": load_before,
    "loadavg_after": load_after,
    "cores": int(nproc),
    "note": "1/5/15-minute load averages above the core count mean other jobs shared the CPU during the run, "
            "so tok/s is low and noisy; rerun on an idle machine for a real comparison.",
    "summary_tok_per_s": {("pp%d" % r["n_prompt"]) if r["n_gen"] == 0 else ("tg%d" % r["n_gen"]): r["avg_ts"]
                          for r in runs},
    "runs": runs,
}
with open(out, "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
print(json.dumps(result["summary_tok_per_s"]))
PY
echo "wrote $out"
