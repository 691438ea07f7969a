#!/usr/bin/env python3
"""Decode speed with and without an output constraint, against a running `kestrel serve`.

For each concurrency, runs the same chat requests twice: free, and with a JSON schema (response_format
json_schema: an object holding a long array of short strings, so the constrained answers are as long as
the free ones). Each request streams; its decode time per output token (TPOT) is measured over the same
positions in both modes (from its first streamed piece to the `--window`-th after it). Reports the decode tok/s of each mode (tokens / decode
seconds, summed over a wave of concurrent requests) and their ratio (the issue's goal: >= 0.95).

  python3 bench/serving/structured_overhead.py --base-url http://127.0.0.1:8080 --concurrency 1 8 \
      --requests 8 --max-tokens 256 --result-json out.json
"""

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import requests

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 40},
        "items": {"type": "array", "items": {"type": "string", "maxLength": 24}, "maxItems": 400},
    },
    "required": ["title", "items"],
}
PROMPT = "List as many fruits, vegetables and spices as you can, as JSON."


def one(base, model, max_tokens, constrained, seed):
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens,
            "temperature": 0.8, "seed": seed, "stream": True, "stream_options": {"include_usage": True},
            "logprobs": True}
    if constrained:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "list", "schema": SCHEMA}}
    else:
        body["ignore_eos"] = True
    stamps, text, usage = [], [], None
    with requests.post(base + "/v1/chat/completions", json=body, stream=True, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for c in chunk.get("choices", []):
                if c["delta"].get("content"):
                    text.append(c["delta"]["content"])
                # One stamp per token the chunk carries (its logprobs entries), when it arrived.
                n = len((c.get("logprobs") or {}).get("content") or [])
                stamps.extend([time.perf_counter()] * n)
    tokens = usage["completion_tokens"] if usage else len(stamps)
    out = "".join(text)
    valid = None
    if constrained:
        try:
            json.loads(out)
            valid = True
        except ValueError:
            valid = False
    return {"tokens": tokens, "stamps": stamps, "valid_json": valid}


def wave(base, model, n, conc, max_tokens, constrained, window):
    with ThreadPoolExecutor(conc) as pool:
        t0 = time.perf_counter()
        res = list(pool.map(lambda i: one(base, model, max_tokens, constrained, 100 + i), range(n)))
        wall = time.perf_counter() - t0
    # Per request: the time per token over the same positions in both modes (tokens 1..window after the
    # first), so answers of different lengths compare at equal context lengths.
    tpot = [(r["stamps"][window] - r["stamps"][0]) / window for r in res if len(r["stamps"]) > window]
    return {
        "requests": n, "concurrency": conc, "wall_s": wall,
        "output_tokens": sum(r["tokens"] for r in res),
        "tpot_ms_median": 1e3 * statistics.median(tpot) if tpot else None,
        "decode_tok_s_per_request": 1 / statistics.median(tpot) if tpot else None,
        "decode_tok_s_total": conc / statistics.median(tpot) if tpot else None,
        "valid_json": sum(1 for r in res if r["valid_json"]) if constrained else None,
        "measured_requests": len(tpot),
        "mean_tokens": statistics.mean(r["tokens"] for r in res),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--requests", type=int, default=8, help="requests per concurrency and mode")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--window", type=int, default=48, help="tokens after the first that TPOT is measured over")
    ap.add_argument("--result-json")
    a = ap.parse_args()
    model = requests.get(a.base_url + "/v1/models", timeout=30).json()["data"][0]["id"]
    one(a.base_url, model, 16, True, 1)  # warm-up: compiles the schema, first masks
    report = {"schema": SCHEMA, "max_tokens": a.max_tokens, "window": a.window, "runs": []}
    for conc in a.concurrency:
        n = max(a.requests, conc)
        free = wave(a.base_url, model, n, conc, a.max_tokens, False, a.window)
        constrained = wave(a.base_url, model, n, conc, a.max_tokens, True, a.window)
        ratio = constrained["tpot_ms_median"] and free["tpot_ms_median"] / constrained["tpot_ms_median"]
        report["runs"].append({"concurrency": conc, "free": free, "json_schema": constrained,
                               "constrained_over_free_decode_speed": ratio})
        print(f"concurrency {conc}: free TPOT {free['tpot_ms_median']:.2f} ms, json_schema TPOT "
              f"{constrained['tpot_ms_median']:.2f} ms -> constrained decode at {100 * ratio:.1f}% of free "
              f"({constrained['valid_json']}/{n} valid JSON, {constrained['mean_tokens']:.0f} vs "
              f"{free['mean_tokens']:.0f} tokens per answer)", flush=True)
    if a.result_json:
        with open(a.result_json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
