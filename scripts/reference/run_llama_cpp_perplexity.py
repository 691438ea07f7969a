#!/usr/bin/env python3
"""Runs llama.cpp's llama-perplexity on the committed text fixture and records the result as JSON.

Writes bench/results/llama_cpp_perplexity_<YYYY-MM-DD>.json with, per context size, the final PPL
estimate, its +/- error, the exact command and the wall time, plus the llama.cpp build, the model's and
the text's sha256, so a Kestrel `perplexity` run on the same file and context can be compared.
Expects scripts/reference/build_llama_cpp.sh to have run.
Usage: python3 scripts/reference/run_llama_cpp_perplexity.py [--model GGUF] [--ctx 512 2048] [--threads 2]
"""
import argparse
import datetime
import json
import pathlib
import platform
import re
import subprocess
import time

from reference_paths import BUILD, CACHE, REPO, sha256

DEFAULT_MODEL = CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_TEXT = REPO / "tests/fixtures/text/hamlet_act1_2.txt"



def display_path(path: pathlib.Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def cpu_name() -> str:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def llama_cpp_version(binary: pathlib.Path) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stderr
    return out.strip().splitlines()[0] if out.strip() else "unknown"


def run_one(binary, model, text, ctx, threads):
    cmd = [str(binary), "-m", str(model), "-f", str(text), "-c", str(ctx), "-t", str(threads)]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - start
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"llama-perplexity failed ({proc.returncode}):\n{log[-4000:]}")
    final = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log)
    chunks = re.search(r"calculating perplexity over (\d+) chunks, n_ctx=(\d+)", log)
    if not final:
        raise SystemExit(f"no final PPL estimate in llama-perplexity output:\n{log[-4000:]}")
    # llama-perplexity scores only the second half of each chunk (the first half is context).
    return {
        "ctx": ctx,
        "ppl": float(final.group(1)),
        "ppl_stderr": float(final.group(2)),
        "n_chunks": int(chunks.group(1)) if chunks else None,
        "command": " ".join(cmd),
        "wall_s": round(wall, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=pathlib.Path, default=DEFAULT_MODEL)
    ap.add_argument("--text", type=pathlib.Path, default=DEFAULT_TEXT)
    ap.add_argument("--ctx", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=pathlib.Path)
    args = ap.parse_args()
    binary = BUILD / "bin/llama-perplexity"
    if not binary.exists():
        raise SystemExit(f"{binary} not found: run scripts/reference/build_llama_cpp.sh first")
    if not args.model.exists():
        raise SystemExit(f"{args.model} not found: run scripts/setup.sh first")
    today = datetime.date.today().isoformat()
    out = args.out or REPO / f"bench/results/llama_cpp_perplexity_{today}.json"
    result = {
        "tool": "llama-perplexity",
        "date": today,
        "llama_cpp": llama_cpp_version(binary),
        "llama_cpp_source": "vendor/llama.cpp of the llama-cpp-python sdist (scripts/reference/build_llama_cpp.sh)",
        "cpu": cpu_name(),
        "threads": args.threads,
        "model": args.model.name,
        "model_sha256": sha256(args.model),
        "text": display_path(args.text),
        "text_sha256": sha256(args.text),
        "note": "PPL is deterministic for a given build and thread count; wall_s was measured on a 2-core machine "
                "shared with other jobs and is only indicative.",
        "runs": [run_one(binary, args.model, args.text, c, args.threads) for c in args.ctx],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
