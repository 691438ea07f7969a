#!/usr/bin/env bash
# GGUF quantization types on the CPU, Kestrel against llama.cpp on real weights: the default model is
# re-quantized by llama.cpp's own llama-quantize into each type, then both engines measure perplexity on the
# same text with the same protocol (512-token chunks, second half scored, the first CHUNKS chunks) and speed
# (prefill and decode). Equal perplexity shows a type is read and multiplied right. The default model is
# itself Q4_1, so these files come from weights already on a 4-bit grid: a parity check, not a measure of
# what each type costs in accuracy.
# Usage: bench/peers/gguf_types_cpu.sh [TYPE ...]   (default: Q5_0 Q5_1 Q2_K Q3_K_M Q5_K_M)
# Env: OUT (default bench/results/<date>-cpu-gguf-types.json), CHUNKS (default 10), THREADS (default 2),
#      KESTREL_BIN (default build/kestrel), COMMIT (recorded; default git HEAD).
set -euo pipefail
cd "$(dirname "$0")/../.."
cache="${KESTREL_CACHE:-$HOME/.cache/kestrel}"
types=("$@")
[ ${#types[@]} -eq 0 ] && types=(Q5_0 Q5_1 Q2_K Q3_K_M Q5_K_M)
out="${OUT:-bench/results/$(date +%F)-cpu-gguf-types.json}"
chunks="${CHUNKS:-10}"
threads="${THREADS:-2}"
k="${KESTREL_BIN:-build/kestrel}"
bin="$cache/llama.cpp-build/bin"
text=tests/fixtures/text/hamlet_act1_2.txt
src="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -x "$bin/llama-quantize" ] || { echo "needs llama-quantize: scripts/reference/build_llama_cpp.sh, then" \
  "cmake --build $cache/llama.cpp-build --target llama-quantize" >&2; exit 1; }
[ -f "$src" ] || { echo "the default model is missing: run scripts/setup.sh" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ppl() { grep -Eo 'PPL = [0-9.]+' | tail -1 | cut -d' ' -f3; }
results=()
for t in "${types[@]}"; do
  f="$work/smollm2-$t.gguf"
  "$bin/llama-quantize" --allow-requantize "$src" "$f" "$t" >"$work/quantize-$t.log" 2>&1
  kp=$("$k" perplexity "$text" -m "$f" -c 512 -t "$threads" --chunks "$chunks" 2>&1 | ppl)
  lp=$(LD_LIBRARY_PATH="$bin" "$bin/llama-perplexity" -m "$f" -f "$text" -c 512 -t "$threads" --chunks "$chunks" 2>&1 |
    grep -Eo 'Final estimate: PPL = [0-9.]+' | cut -d' ' -f5)
  "$k" bench -m "$f" -t "$threads" -p 128 -n 32 -r 2 --json "$work/kestrel-$t.json" >/dev/null 2>&1
  LD_LIBRARY_PATH="$bin" "$bin/llama-bench" -m "$f" -t "$threads" -p 128 -n 32 -r 2 -o json >"$work/llama-$t.json" 2>/dev/null
  echo "$t: kestrel PPL $kp, llama.cpp PPL $lp"
  results+=("$t" "$kp" "$lp")
done
python3 - "$out" "$work" "$chunks" "$threads" "${COMMIT:-$(git rev-parse --short HEAD)}" "$*" "${results[@]}" <<'PY'
import datetime, json, sys
out, work, chunks, threads, commit, args, *res = sys.argv[1:]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
rows = []
for i in range(0, len(res), 3):
    t, kp, lp = res[i:i + 3]
    kb = json.load(open(f"{work}/kestrel-{t}.json"))
    lb = json.load(open(f"{work}/llama-{t}.json"))
    rows.append({"type": t, "kestrel_ppl": float(kp), "llama_cpp_ppl": float(lp),
                 "kestrel_bench": kb.get("results", kb),
                 "llama_bench": [{"n_prompt": r["n_prompt"], "n_gen": r["n_gen"], "avg_ts": r["avg_ts"]} for r in lb]})
json.dump({"card": f"CPU: {cpu}, {threads} threads", "commit": commit, "date": datetime.date.today().isoformat(),
           "command": f"bench/peers/gguf_types_cpu.sh {args}".strip() + f" (CHUNKS={chunks}, THREADS={threads})",
           "note": "default model re-quantized from Q4_1 by llama-quantize --allow-requantize; perplexity on "
                   f"tests/fixtures/text/hamlet_act1_2.txt, -c 512, first {chunks} chunks; speed -p 128 -n 32 -r 2",
           "result": rows}, open(out, "w"), indent=1)
print(f"wrote {out}")
PY
