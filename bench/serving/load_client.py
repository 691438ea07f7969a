#!/usr/bin/env python3
"""Serving benchmark for any OpenAI-compatible server (kestrel serve, vLLM, SGLang, llama.cpp).

Replays a conversation-like workload: requests arrive as a Poisson process (or all at once), prompt and
output lengths follow log-normal distributions shaped like ShareGPT's (long-tailed, median prompt about
twice the median answer), generated locally with a seed since no dataset can be downloaded. Every
request streams, so time to first token (TTFT), time per output token (TPOT, excluding the first) and
inter-token latency (ITL) are measured per chunk. The report has the layout of vLLM's
benchmark_serving.py so numbers line up side by side, plus SLO attainment (the share of requests whose
TTFT and TPOT both meet the targets; vLLM calls the rate of those "goodput").

    python3 bench/serving/load_client.py --base-url http://127.0.0.1:8080 --num-prompts 200 \
        --request-rate 4 --slo-ttft-ms 1000 --slo-tpot-ms 100 --result-json out.json
"""

import argparse
import asyncio
import json
import math
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field

import aiohttp

WORDS = ("the of and to in is was for on that with as by at from his her an which you are this be it not "
         "or have had were but all they one we can there their has more when will would who what been so "
         "time people year way day man thing woman life child world school state family student group "
         "country problem hand part place case week company system program question work government number "
         "night point home water room mother area money story fact month lot right study book eye job word "
         "business issue side kind head house service friend father power hour game line end member law car "
         "city community name president team minute idea kid body information back parent face others level "
         "office door health person art war history party result change morning reason research girl guy").split()


@dataclass
class Sample:
    prompt: str
    prompt_words: int
    output_len: int


@dataclass
class Outcome:
    ok: bool = False
    error: str = ""
    prompt_tokens: int = 0
    output_tokens: int = 0
    ttft: float = 0.0
    latency: float = 0.0
    itl: list = field(default_factory=list)

    @property
    def tpot(self):
        return (self.latency - self.ttft) / (self.output_tokens - 1) if self.output_tokens > 1 else 0.0


def lognormal_lengths(rng, n, median, sigma, lo, hi):
    return [int(min(hi, max(lo, round(rng.lognormvariate(math.log(median), sigma))))) for _ in range(n)]


def make_workload(args):
    """ShareGPT-like: prompts median ~`input_median` tokens, answers ~`output_median`, both long-tailed."""
    rng = random.Random(args.seed)
    ins = lognormal_lengths(rng, args.num_prompts, args.input_median, args.input_sigma, 4, args.max_input)
    outs = lognormal_lengths(rng, args.num_prompts, args.output_median, args.output_sigma, 1, args.max_output)
    samples = []
    for i, (n_in, n_out) in enumerate(zip(ins, outs)):
        # About 1.3 tokens per English word for BPE vocabularies; the server reports the real count.
        words = max(1, round(n_in / 1.3))
        text = f"Conversation {i}: " + " ".join(rng.choice(WORDS) for _ in range(words))
        samples.append(Sample(text, words, n_out))
    return samples


async def one_request(session, args, sample, headers):
    url = args.base_url.rstrip("/") + ("/v1/chat/completions" if args.endpoint == "chat" else "/v1/completions")
    body = {"model": args.model, "stream": True, "max_tokens": sample.output_len, "temperature": args.temperature,
            "stream_options": {"include_usage": True}}
    if args.ignore_eos:
        body["ignore_eos"] = True  # vLLM/kestrel extension: fix the output length
    if args.endpoint == "chat":
        body["messages"] = [{"role": "user", "content": sample.prompt}]
    else:
        body["prompt"] = sample.prompt
    out = Outcome()
    start = time.perf_counter()
    last = start
    try:
        async with session.post(url, json=body, headers=headers) as resp:
            if resp.status != 200:
                out.error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                return out
            buf = b""
            async for data in resp.content.iter_any():
                buf += data
                while b"\n\n" in buf:
                    event, buf = buf.split(b"\n\n", 1)
                    if not event.startswith(b"data: "):
                        continue
                    payload = event[6:]
                    if payload == b"[DONE]":
                        continue
                    chunk = json.loads(payload)
                    if "error" in chunk:
                        out.error = chunk["error"].get("message", "error event")
                        return out
                    if chunk.get("usage"):
                        out.prompt_tokens = chunk["usage"]["prompt_tokens"]
                        out.output_tokens = chunk["usage"]["completion_tokens"]
                    for c in chunk.get("choices", []):
                        piece = c.get("text") if args.endpoint == "completions" else c.get("delta", {}).get("content")
                        if piece:
                            now = time.perf_counter()
                            if out.ttft == 0.0:
                                out.ttft = now - start
                            else:
                                out.itl.append(now - last)
                            last = now
        out.latency = time.perf_counter() - start
        out.ok = out.output_tokens > 0
        if not out.ok:
            out.error = "no usage reported"
    except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError) as e:
        out.error = f"{type(e).__name__}: {e}"
    return out


async def run(args, samples):
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    rng = random.Random(args.seed + 1)
    limit = asyncio.Semaphore(args.max_concurrency) if args.max_concurrency else None
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        if not args.model:
            async with session.get(args.base_url.rstrip("/") + "/v1/models", headers=headers) as r:
                args.model = (await r.json())["data"][0]["id"]

        async def limited(s):
            if limit is None:
                return await one_request(session, args, s, headers)
            async with limit:
                return await one_request(session, args, s, headers)

        tasks = []
        t0 = time.perf_counter()
        for s in samples:
            tasks.append(asyncio.create_task(limited(s)))
            if args.request_rate != float("inf"):
                await asyncio.sleep(rng.expovariate(args.request_rate))  # Poisson arrivals
        outcomes = await asyncio.gather(*tasks)
        return outcomes, time.perf_counter() - t0


def pct(values, p):
    if not values:
        return 0.0
    v = sorted(values)
    k = (len(v) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def summarize(args, outcomes, duration):
    ok = [o for o in outcomes if o.ok]
    ttft = [o.ttft * 1000 for o in ok]
    tpot = [o.tpot * 1000 for o in ok if o.output_tokens > 1]
    itl = [x * 1000 for o in ok for x in o.itl]
    e2e = [o.latency * 1000 for o in ok]
    good = [o for o in ok if o.ttft * 1000 <= args.slo_ttft_ms and o.tpot * 1000 <= args.slo_tpot_ms]
    total_in = sum(o.prompt_tokens for o in ok)
    total_out = sum(o.output_tokens for o in ok)
    result = {
        "completed": len(ok),
        "failed": len(outcomes) - len(ok),
        "duration_s": duration,
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": len(ok) / duration,
        "output_throughput": total_out / duration,
        "total_token_throughput": (total_in + total_out) / duration,
        "slo": {"ttft_ms": args.slo_ttft_ms, "tpot_ms": args.slo_tpot_ms},
        "slo_attainment": len(good) / len(outcomes) if outcomes else 0.0,
        "goodput_req_s": len(good) / duration,
        "errors": sorted({o.error for o in outcomes if not o.ok})[:5],
    }
    for name, vals in (("ttft", ttft), ("tpot", tpot), ("itl", itl), ("e2el", e2e)):
        result[f"mean_{name}_ms"] = statistics.fmean(vals) if vals else 0.0
        for p in (50, 90, 99):
            result[f"p{p}_{name}_ms"] = pct(vals, p)
    return result


def print_report(args, r):
    w = 50
    line = lambda k, v: print(f"{k:<40}{v:<10}")
    print("{s:{c}^{n}}".format(s=" Serving Benchmark Result ", n=w, c="="))
    line("Successful requests:", r["completed"])
    line("Failed requests:", r["failed"])
    line("Request rate (req/s):", args.request_rate)
    line("Max concurrency:", args.max_concurrency or "unlimited")
    line("Benchmark duration (s):", f"{r['duration_s']:.2f}")
    line("Total input tokens:", r["total_input_tokens"])
    line("Total generated tokens:", r["total_output_tokens"])
    line("Request throughput (req/s):", f"{r['request_throughput']:.2f}")
    line("Output token throughput (tok/s):", f"{r['output_throughput']:.2f}")
    line("Total Token throughput (tok/s):", f"{r['total_token_throughput']:.2f}")
    for key, title in (("ttft", "Time to First Token"), ("tpot", "Time per Output Token (excl. 1st token)"),
                       ("itl", "Inter-token Latency"), ("e2el", "End-to-end Latency")):
        print("{s:{c}^{n}}".format(s=title, n=w, c="-"))
        line(f"Mean {key.upper()} (ms):", f"{r[f'mean_{key}_ms']:.2f}")
        for p in (50, 90, 99):
            line(f"P{p} {key.upper()} (ms):", f"{r[f'p{p}_{key}_ms']:.2f}")
    print("{s:{c}^{n}}".format(s="Service Level Objectives", n=w, c="-"))
    line("SLO (TTFT / TPOT ms):", f"{args.slo_ttft_ms:g} / {args.slo_tpot_ms:g}")
    line("SLO attainment (%):", f"{100 * r['slo_attainment']:.1f}")
    line("Goodput (req/s):", f"{r['goodput_req_s']:.2f}")
    print("=" * w)
    for e in r["errors"]:
        print("error:", e, file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", default="http://127.0.0.1:8080")
    p.add_argument("--api-key", default=None)
    p.add_argument("--model", default=None, help="model id (default: the first of /v1/models)")
    p.add_argument("--endpoint", choices=("chat", "completions"), default="completions")
    p.add_argument("--num-prompts", type=int, default=200)
    p.add_argument("--request-rate", type=float, default=float("inf"),
                   help="mean arrivals per second (Poisson); inf sends everything at once")
    p.add_argument("--max-concurrency", type=int, default=0, help="cap on requests in flight (0: none)")
    p.add_argument("--input-median", type=float, default=200, help="median prompt tokens (ShareGPT: ~200)")
    p.add_argument("--input-sigma", type=float, default=1.0)
    p.add_argument("--max-input", type=int, default=1024)
    p.add_argument("--output-median", type=float, default=120, help="median output tokens")
    p.add_argument("--output-sigma", type=float, default=0.8)
    p.add_argument("--max-output", type=int, default=512)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--no-ignore-eos", dest="ignore_eos", action="store_false",
                   help="let the model stop early (output lengths then differ from the workload)")
    p.add_argument("--slo-ttft-ms", type=float, default=2000)
    p.add_argument("--slo-tpot-ms", type=float, default=200)
    p.add_argument("--timeout", type=float, default=3600, help="seconds per request")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--result-json", default=None, help="also write the numbers here")
    args = p.parse_args()
    if args.num_prompts < 1 or args.request_rate <= 0:
        p.error("--num-prompts must be >= 1 and --request-rate > 0")

    samples = make_workload(args)
    outcomes, duration = asyncio.run(run(args, samples))
    result = summarize(args, outcomes, duration)
    print_report(args, result)
    if args.result_json:
        result["args"] = {k: v for k, v in vars(args).items() if k != "api_key"}
        result["outcomes"] = [asdict(o) | {"tpot": o.tpot} for o in outcomes]
        with open(args.result_json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
