#!/usr/bin/env python3
"""MiniLM sentence-embedding throughput: `kestrel embed` against sentence-transformers on the same texts and
batch sizes, in turn (A B A B ...) so that drift on a shared machine hits both alike.

  python3 bench/peers/minilm_throughput.py --model DIR [--device cpu|cuda] [--kestrel build/kestrel]
      [--batches 1,32,256] [--texts N] [--rounds 3] [--threads T] [--json OUT]

Texts: the 200 of tests/fixtures/encoder/minilm_golden.json repeated to N (batch 1: the first 64). Kestrel's
figure is its own best pass (`--repeat`, timing the forward passes and tokenization, not the model load);
sentence-transformers' the best of `rounds` timed encode() calls after a warm-up (f32; on CUDA also f16).
Prints one line per batch size and, with --json, writes every figure."""
import argparse
import json
import os
import pathlib
import subprocess
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]


def kestrel_rate(args, path, batch):
    cmd = [args.kestrel, "embed", "-m", args.model, "--device", args.device, "-f", str(path), "-b", str(batch),
           "--repeat", "2"]
    if args.threads:
        cmd += ["-t", str(args.threads)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise SystemExit(f"kestrel embed failed: {p.stderr[-2000:]}")
    line = p.stderr.strip().splitlines()[-1]
    return float(line.split("(")[1].split(" embeddings/s")[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--kestrel", default=str(ROOT / "build" / "kestrel"))
    ap.add_argument("--batches", default="1,32,256")
    ap.add_argument("--texts", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    if args.threads:
        torch.set_num_threads(args.threads)
    texts = json.load(open(ROOT / "tests/fixtures/encoder/minilm_golden.json"))["texts"]
    work = pathlib.Path(tempfile.mkdtemp(prefix="minilm-bench-"))
    peers = [("st_f32", torch.float32)] + ([("st_f16", torch.float16)] if args.device == "cuda" else [])
    models = {name: SentenceTransformer(args.model, device=args.device).to(dtype) for name, dtype in peers}
    rows = {}
    for b in [int(v) for v in args.batches.split(",")]:
        n = 64 if b == 1 else args.texts
        corpus = (texts * (n // len(texts) + 1))[:n]
        path = work / f"texts{n}.txt"
        path.write_text("\n".join(corpus) + "\n")
        row = {"texts": n, "kestrel": 0.0}
        for m in models.values():
            m.encode(corpus[: min(n, 64)], batch_size=b)  # warm-up
        for _ in range(args.rounds):
            row["kestrel"] = max(row["kestrel"], kestrel_rate(args, path, b))
            for name, m in models.items():
                if args.device == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                m.encode(corpus, batch_size=b)
                if args.device == "cuda":
                    torch.cuda.synchronize()
                row[name] = max(row.get(name, 0.0), n / (time.perf_counter() - t0))
        rows[b] = row
        print(f"batch {b}: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items() if k != "texts") + " embeddings/s",
              flush=True)
    if args.json:
        rec = {"device": args.device, "model": args.model, "threads": args.threads or os.cpu_count(),
               "torch": torch.__version__, "rows": rows}
        pathlib.Path(args.json).write_text(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
