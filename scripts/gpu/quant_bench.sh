#!/usr/bin/env bash
# GGUF quantized weights on the GPU against llama.cpp, one device call (~5 min: llama.cpp's build
# dominates). Builds llama.cpp and writes the Llama-3-8B-shaped F16 GGUF and its Q4_K_M with the peer
# recipe (../shared/tools/llamacpp-gpu, packed into PEERDIR), then times llama-bench and `kestrel bench`
# on the same Q4_K_M file — natively (the GGUF types decoded by the kernels) and with --dequantize (bf16
# at load, the A/B baseline) — and runs the CUDA tests of the quantized matmuls meanwhile.
#   scripts/gpu/quant_bench.sh PEERDIR KESTREL KESTREL_TESTS [KESTREL_CUDA_BENCH]
#     KESTREL, KESTREL_TESTS: binaries built with an sm_90 target (plain or .xz-compressed, to fit a call);
#     KESTREL_CUDA_BENCH: the ops bench, whose matmul group then runs while llama.cpp builds (OPS_FILTER,
#     OPS_ENVS below)
# JSON and logs go under $OUT: llamacpp_q4km.json, kestrel_q4km.json, kestrel_q4km_dequantize.json
# (and ops_matmul_<i>.json).
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-$PWD/gpu-out}"
mkdir -p "$out" /tmp/kb
peer="$1"
unpack() {  # PATH NAME: the binary at PATH, decompressed when it is .xz, as /tmp/kb/NAME
  if [[ "$1" == *.xz ]]; then xz -dc "$1" >"/tmp/kb/$2"; else cp "$1" "/tmp/kb/$2"; fi
  chmod +x "/tmp/kb/$2"
}
unpack "$2" kestrel
unpack "$3" kestrel_tests
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/device.txt"
t0=$(date +%s)
(bash "$peer/build_on_gpu.sh" "$peer" >"$out/peer_build.log" 2>&1) &
build=$!
timeout 200 /tmp/kb/kestrel_tests --gtest_filter='CudaOps.*:OpsHarness.Matmul:BatchInvariance.*:CudaModel*:ExecutorCuda.*' \
  >"$out/tests.log" 2>&1
grep -E "FAILED|Failure|PASSED" "$out/tests.log" | head -20
if [[ $# -ge 4 ]]; then
  # OPS_FILTER: the ops bench's --filter (default: every matmul); OPS_ENVS: space-separated runs, each a
  # comma-separated VAR=VALUE list set for that run (A/B of kernel knobs), optionally led by filter=TEXT,
  # written as ops_matmul_<i>.json.
  unpack "$4" kestrel_cuda_bench
  i=0
  for envs in ${OPS_ENVS:-none}; do
    [[ "$envs" == none ]] && envs=""
    filter="${OPS_FILTER:-matmul}"
    if [[ "$envs" == filter=* ]]; then  # a run's own filter: filter=q4_k,VAR=VALUE...
      filter="${envs%%,*}" && filter="${filter#filter=}"
      [[ "$envs" == *,* ]] && envs="${envs#*,}" || envs=""
    fi
    timeout 240 env ${envs//,/ } /tmp/kb/kestrel_cuda_bench --filter "$filter" \
      --json "$out/ops_matmul_$i.json" >"$out/ops_matmul_$i.log" 2>&1
    echo "ops bench run $i ($filter; ${envs:-defaults}):"
    grep -E "M=1 .*dispatch|sum" "$out/ops_matmul_$i.log" | head -40
    i=$((i + 1))
  done
fi
wait "$build"
tail -3 "$out/peer_build.log"
echo "peer ready after $(($(date +%s) - t0)) s"
gguf=/tmp/lc/l3-q4km.gguf
/tmp/lc/llama.cpp/build/bin/llama-bench -m "$gguf" -ngl 99 -fa 1 -p 512 -n 128 -r 3 -o json \
  >"$out/llamacpp_q4km.json" 2>"$out/llamacpp.err"
python3 -c "import json,sys; [print('llama.cpp', r['n_prompt'], r['n_gen'], round(r['avg_ts'], 1)) for r in json.load(open(sys.argv[1]))]" \
  "$out/llamacpp_q4km.json"
timeout 150 /tmp/kb/kestrel bench --device cuda -m "$gguf" -p 512 -n 128 -B 1 -B 8 -B 32 -r 2 \
  --json "$out/kestrel_q4km.json" 2>&1 | tail -8
timeout 120 /tmp/kb/kestrel bench --device cuda -m "$gguf" -p 512 -n 128 -B 1 -r 2 --dequantize \
  --json "$out/kestrel_q4km_dequantize.json" 2>&1 | tail -6
