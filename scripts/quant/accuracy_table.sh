#!/usr/bin/env bash
# The accuracy of `kestrel quantize --method rtn|gptq|awq` on a real model, as llama.cpp's quantize table
# shows its types: for each method and bit width (groups of 128), the quantized model's perplexity on held-out
# text, its KL divergence from the float model and how often both pick the same top token.
#
#   scripts/quant/accuracy_table.sh MODEL_DIR TEXT [EVAL_TEXT]
#
# MODEL_DIR is a Hugging Face float model (safetensors). With one text, its first half (cut at a line) is the
# calibration text and its second half the evaluation text; with two, TEXT calibrates and EVAL_TEXT
# evaluates (they must be different files). The float model runs once with --save-logits, each quantized
# model with --kl-reference. Writes the table to $OUT/accuracy.md (printed too) beside the checkpoints.
# Settings from the environment: KESTREL_BIN (build/kestrel), OUT (a new temporary directory), CTX (512,
# the perplexity window), CHUNKS (0: every window), METHODS ("rtn gptq awq"), BITS ("4 3 2"), GROUP (128),
# CALIB_TOKENS (16384), THREADS (all cores).
set -euo pipefail
[ $# -ge 2 ] && [ $# -le 3 ] || { sed -n '2,15p' "$0" >&2; exit 2; }
model=$1
text=$2
kestrel=${KESTREL_BIN:-$(dirname "$0")/../../build/kestrel}
out=${OUT:-$(mktemp -d -t kestrel-accuracy-XXXXXX)}
ctx=${CTX:-512}
chunks=${CHUNKS:-0}
methods=${METHODS:-rtn gptq awq}
bits_list=${BITS:-4 3 2}
group=${GROUP:-128}
calib_tokens=${CALIB_TOKENS:-16384}
threads=(); [ -n "${THREADS:-}" ] && threads=(-t "$THREADS")
[ -d "$model" ] || { echo "accuracy_table: '$model' is not a model directory" >&2; exit 1; }
mkdir -p "$out"

if [ $# -eq 3 ]; then
  calib=$text
  eval_text=$3
  [ "$(realpath "$calib")" != "$(realpath "$eval_text")" ] ||
    { echo "accuracy_table: the calibration and evaluation texts must be different files" >&2; exit 1; }
else
  calib=$out/calib.txt
  eval_text=$out/eval.txt
  half=$(( $(wc -l <"$text") / 2 ))
  head -n "$half" "$text" >"$calib"
  tail -n +"$((half + 1))" "$text" >"$eval_text"
fi

# "PPL KLD TOP1" of a perplexity run's output (KLD and TOP1 "-" for the reference run).
scores() {
  awk '/^Final estimate: PPL/ {ppl = $5} /^KL divergence/ {kld = $4; sub(",", "", kld)}
       /^same top-1/ {top = $3} END {print ppl, (kld == "" ? "-" : kld), (top == "" ? "-" : top)}' "$1"
}
ppl_flags=(-c "$ctx" --chunks "$chunks" "${threads[@]}")

echo "accuracy_table: float model on $(basename "$eval_text")" >&2
"$kestrel" perplexity -m "$model" "$eval_text" "${ppl_flags[@]}" --save-logits "$out/base.kppl" >"$out/base.log"
size() { find "$1" -maxdepth 1 -name '*.safetensors' -printf '%s\n' | awk '{s += $1} END {printf "%.1f", s / 1048576}'; }
table=$out/accuracy.md
{
  echo "Model: \`$model\`; calibration: $(basename "$calib") (at most $calib_tokens tokens); evaluation:"
  echo "$(basename "$eval_text"), windows of $ctx tokens; groups of $group."
  echo
  echo "| method | bits | size (MiB) | PPL | KLD mean | same top-1 |"
  echo "|---|---|---|---|---|---|"
  read -r ppl _ _ < <(scores "$out/base.log")
  echo "| float | - | $(size "$model") | $ppl | - | - |"
} >"$table"
for method in $methods; do
  for bits in $bits_list; do
    dir=$out/$method-w$bits-g$group
    calib_flags=(); [ "$method" != rtn ] && calib_flags=(--calib "$calib" --calib-tokens "$calib_tokens")
    echo "accuracy_table: $method $bits-bit" >&2
    "$kestrel" quantize --method "$method" --bits "$bits" --group "$group" "${calib_flags[@]}" "${threads[@]}" \
      -m "$model" -o "$dir" >"$dir.quantize.log"
    "$kestrel" perplexity -m "$dir" "$eval_text" "${ppl_flags[@]}" --kl-reference "$out/base.kppl" >"$dir.log"
    read -r ppl kld top < <(scores "$dir.log")
    echo "| $method | $bits | $(size "$dir") | $ppl | $kld | $top |" >>"$table"
  done
done
cat "$table"
echo "accuracy_table: wrote $table" >&2
