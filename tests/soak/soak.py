#!/usr/bin/env python3
"""A bounded-time loopback soak of `kestrel serve` (not part of the normal test run).

Two servers run side by side: the default model, and the tiny test model with a template-heavy chat
template (loops, namespaces, splits, tojson, and a part quadratic in a message's length, so long messages
go over the render budget). Client threads send a random mix for --duration seconds: streaming and
non-streaming chat and completions (some disconnect mid-way), tokenize/detokenize, malformed requests
(garbage bytes, bad JSON, 1e400, token ids past 2^32, oversized heads, bad transfer encodings, wrong
methods), half-closed requests, and chats for the template-heavy model.

It reports, and exits non-zero on:
- a crash (a server process gone before the end) or a non-zero exit status after SIGTERM;
- leaked KV blocks: kestrel_kv_blocks_used must be back to 0 once the load stops;
- RSS growth: after the warm-up, every sample must stay within --rss-tolerance (5%) of the first;
- unaccounted requests: every request the clients sent must be counted exactly once in
  kestrel_requests_total (answers, the HTTP layer's rejections and 499s for clients that left);
- server-side failures: 500s other than the template budget's, and client errors that are not
  disconnects we made.

Usage: python3 tests/soak/soak.py [--duration 600] [--bin build/kestrel] [--model PATH] [--report out.json]
"""

import argparse
import json
import os
import random
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "py"))
import model_files  # noqa: E402
from conftest import free_port, raw_exchange, rss_kib, scrape_metrics, wait_until_healthy  # noqa: E402

HEAVY_TEMPLATE = (
    "{%- set ns = namespace(system='', chars=0, turns=0) -%}"
    "{%- for m in messages if m['role'] == 'system' -%}{%- set ns.system = ns.system + m['content'] -%}{%- endfor -%}"
    "{%- if ns.system %}<|system|>{{ ns.system | trim }}\n{% endif -%}"
    "{%- for m in messages if m['role'] != 'system' -%}"
    "{%- set words = m['content'].split(' ') -%}"
    "{%- for w in words -%}{%- for c in w -%}{%- set ns.chars = ns.chars + 1 -%}{%- endfor -%}{%- endfor -%}"
    "{%- for a in m['content'] -%}{%- for b in m['content'][:200] -%}{%- endfor -%}{%- endfor -%}"
    "{%- set ns.turns = ns.turns + 1 -%}"
    "<|{{ m['role'] }}|>{{ m['content'] | replace('  ', ' ') | trim }} [{{ words | length }}]\n"
    "{%- endfor -%}"
    "{{- '<|meta|>' ~ (messages | tojson | length) ~ ' ' ~ ns.chars ~ ' ' ~ ns.turns ~ '\n' -}}"
    "{%- if add_generation_prompt %}<|assistant|>{% endif -%}")

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly hex an ancient kingdom "
         "under grey autumn skies").split()


class Server:
    def __init__(self, name, binary, model, extra, log_dir):
        self.name = name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_dir) / f"{name}.log"
        self.log = open(self.log_path, "w")
        args = [binary, "serve", "-m", str(model), "--port", str(self.port), *extra]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        wait_until_healthy(self.proc, self.base, lambda: f"{name}: {self.log_path.read_text()[-2000:]}")

    def metrics(self):
        return scrape_metrics(self.base, timeout=30)

    def rss_kib(self):
        return rss_kib(self.proc.pid)

    def answered(self):
        return sum(v for k, v in self.metrics().items() if k.startswith("kestrel_requests_total"))


class Tally:
    """What the clients sent and saw, per server."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent = Counter()      # requests that reached the server (it must count each once)
        self.outcomes = Counter()  # (server, kind, outcome)

    def record(self, server, kind, outcome, counted=True):
        with self.lock:
            if counted:
                self.sent[server.name] += 1
            self.outcomes[(server.name, kind, str(outcome))] += 1


def raw(server, data, half_close=False, timeout=60):
    """Sends raw bytes and reads until the server closes; returns the status code (0: none)."""
    out = raw_exchange(server.port, data, half_close, timeout)
    return int(out[9:12]) if out.startswith(b"HTTP/1.1 ") else 0


def sentence(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def chat_body(rng, max_tokens, stream):
    messages = []
    if rng.random() < 0.3:
        messages.append({"role": "system", "content": "You are terse."})
    for i in range(rng.choice([1, 1, 3])):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": sentence(rng, rng.randint(3, 40))})
    return {"messages": messages, "max_tokens": max_tokens, "stream": stream, "temperature": rng.choice([0, 0.8]),
            "seed": rng.randint(0, 1000)}


def stream_request(server, path, body, rng, tally, kind):
    disconnect_after = rng.choice([None, None, None, 1, 3])
    try:
        with requests.post(server.base + path, json=body, stream=True, timeout=300) as r:
            if r.status_code != 200:
                tally.record(server, kind, r.status_code)
                return
            events, last = 0, b""
            for line in r.iter_lines():
                if not line:
                    continue
                events, last = events + 1, line
                if disconnect_after is not None and events >= disconnect_after:
                    tally.record(server, kind, "client_left")
                    return  # closing the response drops the connection mid-stream
            tally.record(server, kind, 200 if last == b"data: [DONE]" else "stream_cut")
    except requests.RequestException as e:
        tally.record(server, kind, f"client_error:{type(e).__name__}")


def plain_request(server, path, body, rng, tally, kind):
    # Now and then give up before the answer: the server finishes the work and counts it anyway.
    timeout = 0.3 if rng.random() < 0.1 else 300
    try:
        r = requests.post(server.base + path, json=body, timeout=timeout)
        tally.record(server, kind, r.status_code)
    except requests.ReadTimeout:
        tally.record(server, kind, "client_left")
    except requests.RequestException as e:
        tally.record(server, kind, f"client_error:{type(e).__name__}")


def post(path, body):
    return f"POST {path} HTTP/1.1\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body


MALFORMED = [
    ("garbage", lambda rng: bytes(rng.randrange(256) for _ in range(rng.randint(1, 200))) + b"\r\n\r\n"),
    ("bad_json", lambda rng: post("/v1/completions", b"{not json")),
    ("huge_number", lambda rng: post("/v1/completions", b'{"prompt": "x", "top_p": 1e400}')),
    ("bad_token_ids", lambda rng: post("/detokenize", b'{"tokens": [4294967297]}')),
    ("bad_value", lambda rng: post("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "n": 5}')),
    ("huge_head", lambda rng: b"GET /health HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n"),
    ("gzip", lambda rng: b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
    ("http2", lambda rng: b"GET /health HTTP/2.0\r\n\r\n"),
    ("wrong_method", lambda rng: b"GET /v1/completions HTTP/1.1\r\nConnection: close\r\n\r\n"),
    ("no_route", lambda rng: b"GET /v2/nothing HTTP/1.1\r\nConnection: close\r\n\r\n"),
    ("too_big", lambda rng: b"POST /v1/completions HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"),
]


def one_action(rng, main, heavy, tally):
    roll = rng.random()
    if roll < 0.30:
        stream_request(main, "/v1/chat/completions", chat_body(rng, rng.randint(1, 64), True), rng, tally, "chat_stream")
    elif roll < 0.45:
        plain_request(main, "/v1/chat/completions", chat_body(rng, rng.randint(1, 48), False), rng, tally, "chat")
    elif roll < 0.55:
        body = {"prompt": sentence(rng, rng.randint(2, 200)), "max_tokens": rng.randint(1, 48),
                "stream": rng.random() < 0.5, "logprobs": rng.choice([None, 2])}
        if body["stream"]:
            stream_request(main, "/v1/completions", body, rng, tally, "completion_stream")
        else:
            plain_request(main, "/v1/completions", body, rng, tally, "completion")
    elif roll < 0.60:
        plain_request(main, "/tokenize", {"prompt": sentence(rng, rng.randint(1, 2000))}, rng, tally, "tokenize")
    elif roll < 0.75:
        kind, make = rng.choice(MALFORMED)
        tally.record(main, "malformed_" + kind, raw(main, make(rng)))
    elif roll < 0.80:
        body = json.dumps({"prompt": "Half closed", "max_tokens": 4}).encode()
        tally.record(main, "half_closed", raw(main, post("/v1/completions", body), half_close=True))
    elif roll < 0.97:
        # The template-heavy model: most chats render; long messages go over the render budget (500).
        n_words = rng.choice([3, 8, 15, 15, 600])
        body = {"messages": [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": sentence(rng, n_words)}],
                "max_tokens": rng.randint(1, 16), "stream": rng.random() < 0.5}
        if body["stream"]:
            stream_request(heavy, "/v1/chat/completions", body, rng, tally, "heavy_chat_stream")
        else:
            plain_request(heavy, "/v1/chat/completions", body, rng, tally, "heavy_chat")
    else:
        kind, make = rng.choice(MALFORMED)
        tally.record(heavy, "malformed_" + kind, raw(heavy, make(rng)))
    # /health is answered and counted too.
    if rng.random() < 0.05:
        server = rng.choice([main, heavy])
        tally.record(server, "health", requests.get(server.base + "/health", timeout=30).status_code)


def wait_idle(server, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = server.metrics()
        if m["kestrel_num_requests_running"] == 0 and m["kestrel_num_requests_waiting"] == 0:
            return m
        time.sleep(0.5)
    return server.metrics()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=600, help="seconds of load (default 600)")
    ap.add_argument("--warmup", type=float, default=None, help="seconds before the RSS baseline (default 15%%)")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--bin", default=os.environ.get("KESTREL_BIN", str(REPO / "build" / "kestrel")))
    ap.add_argument("--model", default=os.environ.get(
        "KESTREL_MODEL", str(Path.home() / ".cache" / "kestrel" / "SmolLM2-135M-Instruct.Q4_1.gguf")))
    ap.add_argument("--rss-tolerance", type=float, default=0.05)
    ap.add_argument("--sample-every", type=float, default=10)
    ap.add_argument("--report", help="write the report as JSON here too")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    warmup = args.warmup if args.warmup is not None else 0.15 * args.duration

    work = Path(tempfile.mkdtemp(prefix="kestrel-soak-"))
    heavy_model = model_files.hf_with_template(work / "heavy-model", HEAVY_TEMPLATE)
    common = ["--threads", "1", "--drain-timeout", "5", "--max-queue", "32"]
    main_srv = Server("main", args.bin, args.model,
                      [*common, "--ctx-size", "2048", "--kv-cache-tokens", "8192", "--max-running", "8"], work)
    heavy_srv = Server("heavy", args.bin, heavy_model, [*common, "--max-running", "4"], work)
    servers = [main_srv, heavy_srv]
    started = {s.name: int(s.answered()) for s in servers}  # the /health checks of the start-up
    print(f"soak: {args.duration:.0f} s, {args.clients} clients; logs in {work}", flush=True)

    tally = Tally()
    stop = threading.Event()
    crashes = []

    def client(i):
        rng = random.Random(args.seed * 1000 + i)
        while not stop.is_set():
            try:
                one_action(rng, main_srv, heavy_srv, tally)
            except Exception as e:  # a failure of the client's own, recorded as one
                with tally.lock:
                    tally.outcomes[("client", "exception", f"{type(e).__name__}: {e}"[:120])] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
    t0 = time.time()
    for t in threads:
        t.start()
    samples = []
    while time.time() - t0 < args.duration:
        time.sleep(args.sample_every)
        sample = {"t": round(time.time() - t0, 1)}
        for s in servers:
            if s.proc.poll() is not None:
                crashes.append(f"{s.name} exited with {s.proc.returncode} at {sample['t']} s")
                stop.set()
                continue
            m = s.metrics()
            sample[s.name] = {"rss_mib": round(s.rss_kib() / 1024, 1), "kv_used": m["kestrel_kv_blocks_used"],
                              "running": m["kestrel_num_requests_running"],
                              "waiting": m["kestrel_num_requests_waiting"],
                              "connections": m["kestrel_http_connections"], "answered": int(s.answered())}
        samples.append(sample)
        print(json.dumps(sample), flush=True)
        if crashes:
            break
    stop.set()
    for t in threads:
        t.join(timeout=330)

    report = {"duration_s": round(time.time() - t0, 1), "crashes": crashes, "failures": [], "servers": {}}
    for s in servers:
        if s.proc.poll() is not None:
            continue
        m = wait_idle(s)
        time.sleep(1)  # answers of requests that just finished are counted after their last event
        m = s.metrics()
        steady = [x[s.name]["rss_mib"] for x in samples if s.name in x and x["t"] >= warmup]
        base = steady[0] if steady else 0
        growth = (max(steady) - base) / base if base else 0
        answered = int(s.answered()) - started[s.name]
        errors = {k[len("kestrel_request_errors_total"):]: int(v) for k, v in m.items()
                  if k.startswith("kestrel_request_errors_total")}
        report["servers"][s.name] = {
            "requests_sent": tally.sent[s.name], "requests_counted": answered,
            "kv_blocks_used_after": m["kestrel_kv_blocks_used"],
            "kv_blocks": [m["kestrel_kv_blocks_free"], m["kestrel_kv_blocks_cached"], m["kestrel_kv_blocks_total"]],
            "rss_mib_after_warmup": base, "rss_mib_max_after_warmup": max(steady) if steady else 0,
            "rss_growth": round(growth, 4), "errors": errors,
            "requests_by_status": {k[len("kestrel_requests_total"):]: int(v) for k, v in m.items()
                                   if k.startswith("kestrel_requests_total")},
        }
        if m["kestrel_kv_blocks_used"] != 0:
            report["failures"].append(f"{s.name}: {m['kestrel_kv_blocks_used']} KV blocks still used")
        if answered != tally.sent[s.name]:
            report["failures"].append(f"{s.name}: clients sent {tally.sent[s.name]} requests, the server counted "
                                      f"{answered}")
        if growth > args.rss_tolerance:
            report["failures"].append(f"{s.name}: RSS grew {growth:.1%} after the warm-up ({base} -> {max(steady)} MiB)")
        for key, n in errors.items():
            if '"500"' in key and "template_budget_exceeded" not in key:
                report["failures"].append(f"{s.name}: {n} answers {key}")
    for s in servers:
        if s.proc.poll() is None:
            s.proc.send_signal(signal.SIGTERM)
            try:
                code = s.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                code = "killed after 60 s"
            if code != 0:
                report["failures"].append(f"{s.name}: exit status {code} after SIGTERM")
    client_errors = {f"{srv}/{kind}/{out}": n for (srv, kind, out), n in sorted(tally.outcomes.items())
                     if out.startswith("client_error") or srv == "client" or out in ("0", "stream_cut")}
    if client_errors:
        report["failures"].append(f"unexpected client-side outcomes: {client_errors}")
    report["outcomes"] = {f"{srv}/{kind}/{out}": n for (srv, kind, out), n in sorted(tally.outcomes.items())}
    report["failures"] += crashes
    report["rss_samples"] = [{"t": x["t"], **{n: x[n]["rss_mib"] for n in ("main", "heavy") if n in x}}
                             for x in samples]
    print(json.dumps(report, indent=1))
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=1))
    print("soak: " + ("PASS" if not report["failures"] else "FAIL: " + "; ".join(report["failures"])))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
