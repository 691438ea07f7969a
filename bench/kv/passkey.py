#!/usr/bin/env python3
"""Passkey retrieval against a running `kestrel serve` (or any OpenAI-compatible server with /tokenize): a
random 5-digit key hidden at a chosen depth of filler text that fills the context, then "What is the pass
key?"; greedy completion, scored by whether the key's digits come back. The filler and question follow the
passkey test of Mohtashami & Jaggi (2023, "Landmark Attention"), as LongLoRA and KV-quantization papers run
it. Writes a JSON result with one row per trial.
Usage: python3 bench/kv/passkey.py --base-url http://127.0.0.1:8080 --tokens 8000 --trials 5 \
           [--depths 0.1 0.5 0.9] [--seed 1] [--result-json OUT.json] [--label int8]
"""
import argparse
import json
import random
import sys
import time
import urllib.request

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
TASK = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
        "I will quiz you about the important information there.\n")
QUESTION = "\nWhat is the pass key? The pass key is"


def post(base, path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=3600) as r:
        return json.load(r)


def n_tokens(base, text):
    return len(post(base, "/tokenize", {"prompt": text})["tokens"])


def prompt_for(base, target, depth, key):
    needle = f"The pass key is {key}. Remember it. {key} is the pass key. "
    fixed = n_tokens(base, TASK + needle + QUESTION)
    per = n_tokens(base, FILLER * 20) / 20
    reps = max(1, int((target - fixed) / per))
    while True:  # trim until the whole prompt fits the target
        before = int(reps * depth)
        text = TASK + FILLER * before + needle + FILLER * (reps - before) + QUESTION
        n = n_tokens(base, text)
        if n <= target or reps == 1:
            return text, n
        reps -= max(1, int((n - target) / per) + 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--tokens", type=int, required=True, help="prompt length to fill (tokens, at most)")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--depths", type=float, nargs="+", default=[0.1, 0.5, 0.9])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--label", default="")
    ap.add_argument("--result-json")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    model = json.load(urllib.request.urlopen(args.base_url + "/v1/models"))["data"][0]["id"]
    rows = []
    for t in range(args.trials):
        for depth in args.depths:
            key = str(rng.randint(10000, 99999))
            text, n = prompt_for(args.base_url, args.tokens, depth, key)
            t0 = time.time()
            out = post(args.base_url, "/v1/completions",
                       {"model": model, "prompt": text, "max_tokens": 8, "temperature": 0})
            answer = out["choices"][0]["text"]
            ok = key in answer.replace(" ", "")
            rows.append({"trial": t, "depth": depth, "prompt_tokens": n, "key": key, "answer": answer, "found": ok,
                         "seconds": time.time() - t0})
            print(f"trial {t} depth {depth:.2f} {n} tokens: {'found' if ok else 'MISSED'} ({answer.strip()!r})",
                  flush=True)
    found = sum(r["found"] for r in rows)
    print(f"{args.label + ': ' if args.label else ''}{found}/{len(rows)} keys found at {args.tokens} tokens")
    if args.result_json:
        with open(args.result_json, "w") as f:
            json.dump({"label": args.label, "tokens": args.tokens, "found": found, "trials": len(rows), "rows": rows},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
