#!/usr/bin/env bash
# MiniLM sentence embeddings on the GPU machine in one call (~2 min): Kestrel (`kestrel embed`, CUDA and
# CPU) against sentence-transformers on the 200 texts of tests/fixtures/encoder/minilm_golden.json (cosine per
# text), then throughput at batch 1, 32 and 256 against sentence-transformers (f32, and f16 weights and
# activations) in the same run.
#   scripts/gpu/embed_bench.sh BIN_DIR MODEL_DIR
# BIN_DIR holds kestrel (plain or .xz; lib/ beside it for shared libraries the machine lacks); MODEL_DIR is an
# all-MiniLM-L6-v2 directory, F16 with only the golden texts' embedding rows to fit a call
# (scripts/gpu/encoder_f16.py --keep-texts; model.safetensors may come as model.safetensors.xz): both sides
# read the same weights.
# Writes $OUT/embed.json: card, commit, date, command, cosines per device, throughput per batch size.
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-$PWD/gpu-out}"
bin="$1"
model="$2"
mkdir -p "$out"
source scripts/gpu/prebuilt_bins.sh
use_prebuilt "$bin" kestrel
if [[ ! -f "$model/model.safetensors" && -f "$model/model.safetensors.xz" ]]; then
  xz -dc "$model/model.safetensors.xz" >"$model/model.safetensors"
fi
export KESTREL_SOURCE_DIR="$PWD"
card=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)
echo "$card"
python3 - "$out" "$model" "$card" "$(cat "$bin/commit" 2>/dev/null || echo unknown)" <<'PY'
import datetime, json, pathlib, subprocess, sys, time
import numpy as np
import torch
out, model, card, commit = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
texts = json.load(open("tests/fixtures/encoder/minilm_golden.json"))["texts"]
work = pathlib.Path("/tmp/embed_bench")
work.mkdir(exist_ok=True)
(work / "texts.txt").write_text("\n".join(texts) + "\n")
rec = {"card": card, "commit": commit, "date": datetime.date.today().isoformat(),
       "command": "scripts/gpu/embed_bench.sh BIN MODEL_F16", "texts": len(texts)}

def kestrel(device, path, batch=0, repeat=1):
    cmd = ["/tmp/kb/kestrel", "embed", "-m", model, "--device", device, "-f", str(path), "--repeat", str(repeat)]
    if batch:
        cmd += ["-b", str(batch)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise SystemExit(f"kestrel embed failed: {p.stderr[-2000:]}")
    data = json.loads(p.stdout)["data"]
    return np.array([d["embedding"] for d in data], dtype=np.float64), p.stderr.strip().splitlines()[-1]

from sentence_transformers import SentenceTransformer
st = SentenceTransformer(model, device="cuda")
ref = st.encode(texts, batch_size=64, convert_to_numpy=True).astype(np.float64)
for device in ["cuda", "cpu"]:
    got, line = kestrel(device, work / "texts.txt")
    cos = (got * ref).sum(1) / np.maximum(np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1), 1e-30)
    # Two all-zero rows (no token) agree: count them as equal.
    both_zero = (np.linalg.norm(got, axis=1) == 0) & (np.linalg.norm(ref, axis=1) == 0)
    cos[both_zero] = 1.0
    rec[f"cosine_{device}"] = {"min": float(cos.min()), "mean": float(cos.mean()), "below_0.9999": int((cos < 0.9999).sum())}
    print(device, rec[f"cosine_{device}"], line, flush=True)

# Throughput: the texts repeated to 2,560 (batch 1: the first 256).
corpus = (texts * 13)[:2560]
(work / "corpus.txt").write_text("\n".join(corpus) + "\n")
(work / "corpus256.txt").write_text("\n".join(corpus[:256]) + "\n")
thr = {}
for b in [1, 32, 256]:
    path = work / ("corpus256.txt" if b == 1 else "corpus.txt")
    n = 256 if b == 1 else len(corpus)
    _, line = kestrel("cuda", path, batch=b, repeat=3)
    eps = float(line.split("(")[1].split(" embeddings/s")[0])
    row = {"kestrel_cuda": eps, "kestrel_line": line}
    for name, dtype in [("st_f32", torch.float32), ("st_f16", torch.float16)]:
        m = SentenceTransformer(model, device="cuda").to(dtype)
        m.encode(corpus[:n], batch_size=b)  # warm-up
        best = 0.0
        for _ in range(3):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            m.encode(corpus[:n], batch_size=b)
            torch.cuda.synchronize()
            best = max(best, n / (time.perf_counter() - t0))
        row[name] = best
    thr[b] = row
    print("batch", b, {k: v for k, v in row.items() if k != "kestrel_line"}, flush=True)
rec["throughput"] = thr
(out / "embed.json").write_text(json.dumps(rec, indent=1))
PY
