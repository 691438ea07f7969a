"""End-to-end reliability of `kestrel serve`: chat templates that hang or explode, big prompts that must not
stall other connections, the shutdown drain's promises, numbers and token ids at the HTTP layer, metrics
for every rejection, half-closed clients and the API key check."""

import json
import random
import signal
import socket
import string
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

import model_files
from conftest import ServerProcess, assert_openai_error, post_raw, raw_exchange, require_binary


# ---- chat templates from model files ----

@pytest.mark.parametrize("fmt", ["gguf", "hf"])
@pytest.mark.parametrize("template", ["hanging", "exploding"])
def test_model_with_a_runaway_template_is_refused_at_load(tmp_path, fmt, template):
    binary = require_binary()
    source = model_files.HANGING_TEMPLATE if template == "hanging" else model_files.EXPLODING_TEMPLATE
    model = (model_files.gguf_with_template(tmp_path / "m.gguf", source) if fmt == "gguf"
             else model_files.hf_with_template(tmp_path / "m", source))
    t0 = time.time()
    proc = subprocess.run([str(binary), "serve", "-m", str(model), "--port", "0"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "render budget" in proc.stderr and "probe conversation" in proc.stderr, proc.stderr
    assert time.time() - t0 < 30


def test_template_over_budget_at_request_time_is_a_500_and_the_server_keeps_serving(tmp_path):
    model = model_files.gguf_with_template(tmp_path / "quadratic.gguf", model_files.QUADRATIC_TEMPLATE)
    s = ServerProcess(api_key=None, model=model)
    try:
        ok = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 2}
        assert requests.post(s.base + "/v1/chat/completions", json=ok, timeout=60).status_code == 200
        long = {"messages": [{"role": "user", "content": "a" * 20000}], "max_tokens": 2}
        t0 = time.time()
        err = assert_openai_error(requests.post(s.base + "/v1/chat/completions", json=long, timeout=60), 500)
        assert err["code"] == "template_budget_exceeded" and "render budget" in err["message"]
        assert time.time() - t0 < 10
        err = assert_openai_error(requests.post(s.base + "/tokenize", json=long, timeout=60), 500)
        assert err["code"] == "template_budget_exceeded"
        assert requests.get(s.base + "/health", timeout=5).status_code == 200
        assert requests.post(s.base + "/v1/chat/completions", json=ok, timeout=60).status_code == 200
        m = s.metrics()
        assert m['kestrel_request_errors_total{status="500",reason="template_budget_exceeded"}'] == 2
    finally:
        assert s.stop() == 0


# ---- big prompts are prepared off the I/O thread ----

def random_words(n_bytes, seed=3):
    rng = random.Random(seed)
    out, size = [], 0
    while size < n_bytes:
        w = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9)))
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:n_bytes]


def test_a_4_mib_prompt_does_not_stall_streams_or_health(server, model_id):
    big = json.dumps({"prompt": random_words((4 << 20) - 64)})
    assert len(big) <= 4 << 20
    arrivals, health = [], []
    body = {"model": model_id, "prompt": "Once upon a time", "max_tokens": 1000, "ignore_eos": True, "stream": True,
            "temperature": 0}
    stream = requests.post(server.base + "/v1/completions", json=body, headers=server.headers(), stream=True,
                           timeout=300)
    lines = stream.iter_lines()
    next(lines)

    done = threading.Event()

    def read():
        for line in lines:
            if line:
                arrivals.append(time.monotonic())
            if done.is_set():
                break

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.5)

    def poll_health():
        while not done.is_set():
            t0 = time.monotonic()
            assert requests.get(server.base + "/health", timeout=30).status_code == 200
            health.append(time.monotonic() - t0)
            time.sleep(0.02)

    poller = threading.Thread(target=poll_health)
    poller.start()
    start = time.monotonic()
    for _ in range(2):
        # Tokenized in full, then refused as longer than the context: a short answer keeps this client's
        # own work (and its Python lock) out of the timings.
        err = assert_openai_error(post_raw(server, "/v1/completions", big), 400)
        assert err["code"] == "context_length_exceeded" and int(err["message"].split()[-2]) > 500_000
    end = time.monotonic()
    done.set()
    poller.join()
    reader.join(timeout=30)
    stream.close()
    during = [t for t in arrivals if start <= t <= end]
    assert end - start > 1, "the big prompts were prepared too fast to tell"
    gaps = [b - a for a, b in zip(during, during[1:])]
    assert len(during) > 10 and max(gaps) < 0.5, f"stream stalled: max gap {max(gaps or [end - start]):.2f} s"
    assert health and max(health) < 0.5, f"/health took {max(health):.2f} s"


# ---- numbers and token ids at the HTTP layer ----

@pytest.mark.parametrize("path,body,param", [
    ("/v1/completions", '{"prompt": "x", "temperature": 1e400}', "temperature"),
    ("/v1/completions", '{"prompt": "x", "max_tokens": -1e400}', "max_tokens"),
    ("/v1/completions", '{"prompt": "x", "seed": 1e999}', "seed"),
    ("/v1/completions", '{"prompt": [1, 2, 1e400]}', "prompt"),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "x"}], "top_p": 1e400}', "top_p"),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "x"}], "stream": true, '
                             '"stream_options": {"include_usage": 1e400}}', "stream_options.include_usage"),
    ("/tokenize", '{"prompt": "x", "logprobs": 1e400}', "logprobs"),
    ("/detokenize", '{"tokens": [1e400]}', "tokens"),
])
def test_numbers_beyond_a_double_are_a_400_naming_the_field(server, path, body, param):
    err = assert_openai_error(post_raw(server, path, body), 400)
    assert err["param"] == param, err


@pytest.mark.parametrize("path,body,param", [
    ("/detokenize", {"tokens": [1, 4294967297]}, "tokens"),
    ("/detokenize", {"tokens": [2 ** 64 - 1]}, "tokens"),
    ("/detokenize", {"tokens": [-1]}, "tokens"),
    ("/detokenize", {"tokens": [49152]}, "tokens"),
    ("/v1/completions", {"prompt": [1, 4294967297], "max_tokens": 1}, "prompt"),
    ("/v1/completions", {"prompt": [[2 ** 63]], "max_tokens": 1}, "prompt"),
    ("/v1/completions", {"prompt": [49152], "max_tokens": 1}, "prompt"),
])
def test_token_ids_are_checked_before_they_are_narrowed(server, path, body, param):
    err = assert_openai_error(post_raw(server, path, json.dumps(body)), 400)
    assert err["param"] == param, err
    assert post_raw(server, "/detokenize", json.dumps({"tokens": [1, 2]})).status_code == 200


# ---- API key ----

def test_bearer_scheme_is_case_insensitive_and_401_names_the_scheme(server):
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"]:
        r = post_raw(server, "/tokenize", '{"prompt": "x"}', {"Authorization": f"{scheme} {server.api_key}"})
        assert r.status_code == 200, (scheme, r.text)
    for auth in [f"Basic {server.api_key}", "Bearer", "Bearer wrong", f"Bearer {server.api_key}x",
                 f"Bearer {server.api_key[:-1]}", f"Bearer{server.api_key}"]:
        r = post_raw(server, "/tokenize", '{"prompt": "x"}', {"Authorization": auth})
        assert assert_openai_error(r, 401)["code"] == "invalid_api_key", auth
        assert r.headers.get("WWW-Authenticate") == "Bearer"


# ---- metrics count every rejection ----

def error_counts(server):
    return {k: v for k, v in server.metrics().items() if k.startswith("kestrel_request_errors_total")}


def test_metrics_count_every_rejection_by_status_and_reason():
    s = ServerProcess("--max-connections", "3", "--header-timeout", "1", "--max-body-bytes", "2048",
                      api_key="k")
    try:
        port = s.port
        assert raw_exchange(port, b"\x00GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")
        assert raw_exchange(port, b"POST /v1/completions HTTP/1.1\r\nContent-Length: 4096\r\n\r\n").startswith(
            b"HTTP/1.1 413")
        assert raw_exchange(port, b"GET /health HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n").startswith(
            b"HTTP/1.1 431")
        assert raw_exchange(port, b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n").startswith(
            b"HTTP/1.1 501")
        assert raw_exchange(port, b"GET /health HTTP/3.0\r\n\r\n").startswith(b"HTTP/1.1 505")
        assert raw_exchange(port, b"GET /health HTTP/1.1\r\nHost: slow").startswith(b"HTTP/1.1 408")
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        time.sleep(0.3)
        assert raw_exchange(port, b"GET /health HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 503")
        for h in held:
            h.close()
        time.sleep(0.3)
        auth = {"Authorization": "Bearer k"}
        assert requests.post(s.base + "/v1/completions", json={"prompt": "x"}).status_code == 401
        assert requests.post(s.base + "/v1/completions", data='{"prompt": "x", "top_p": 1e400}',
                             headers=auth).status_code == 400
        assert requests.post(s.base + "/v1/completions", json={"prompt": "x", "n": 2}, headers=auth).status_code == 400
        assert requests.get(s.base + "/nothing", headers=auth).status_code == 404
        m = s.metrics()
        expected = {("400", "malformed_request"): 1, ("413", "body_too_large"): 1, ("431", "headers_too_large"): 1,
                    ("501", "not_implemented"): 1, ("505", "http_version_not_supported"): 1,
                    ("408", "request_timeout"): 1, ("503", "too_many_connections"): 1, ("401", "invalid_api_key"): 1,
                    ("400", "invalid_value"): 2, ("404", "not_found"): 1}
        for (status, reason), n in expected.items():
            assert m.get(f'kestrel_request_errors_total{{status="{status}",reason="{reason}"}}') == n, (status, reason)
        for status in {st for st, _ in expected}:
            want = sum(n for (st, _), n in expected.items() if st == status)
            assert m.get(f'kestrel_requests_total{{status="{status}"}}') == want, status
    finally:
        assert s.stop() == 0


# ---- half-closed clients ----

@pytest.mark.parametrize("stream", [False, True])
def test_half_closed_client_gets_its_answer(server, model_id, stream):
    body = json.dumps({"model": model_id, "prompt": "The sky is", "max_tokens": 8, "temperature": 0,
                       "stream": stream}).encode()
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.api_key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    out = raw_exchange(server.port, head + body, half_close=True)
    assert out.startswith(b"HTTP/1.1 200"), out[:200]
    if stream:
        assert b"data: [DONE]" in out and out.endswith(b"0\r\n\r\n")
    else:
        assert json.loads(out.split(b"\r\n\r\n", 1)[1])["usage"]["completion_tokens"] == 8


# ---- the shutdown drain ----

def start_generations(s, n_stream, n_plain):
    """Starts long generations, the streams first; returns (futures of stream lines, futures of plain
    responses, pool)."""
    body = {"prompt": "Tell me a long story.", "max_tokens": 1500, "ignore_eos": True, "temperature": 0}
    first_lines = threading.Barrier(n_stream + 1)

    def stream_lines():
        with requests.post(s.base + "/v1/completions", json={**body, "stream": True}, stream=True,
                           timeout=120) as r:
            assert r.status_code == 200
            lines = []
            for line in r.iter_lines():
                if line:
                    lines.append(line)
                    if len(lines) == 1:
                        first_lines.wait()
            return lines

    def plain():
        return requests.post(s.base + "/v1/completions", json=body, timeout=120)

    pool = ThreadPoolExecutor(n_stream + n_plain)
    streams = [pool.submit(stream_lines) for _ in range(n_stream)]
    # The plain requests only once every stream runs: sent together, a plain one could take a stream's slot,
    # and a stream left waiting for a slot never sends the first line the barrier waits for.
    first_lines.wait(timeout=60)
    plains = [pool.submit(plain) for _ in range(n_plain)]
    for _ in range(100):  # every request has reached the engine
        m = s.metrics()
        if m["kestrel_num_requests_running"] + m["kestrel_num_requests_waiting"] == n_stream + n_plain:
            break
        time.sleep(0.1)
    return streams, plains, pool


def check_cancelled(streams, plains):
    for f in streams:
        lines = f.result(timeout=60)
        assert lines[-1] == b"data: [DONE]", lines[-3:]
        err = json.loads(lines[-2][len(b"data: "):])["error"]
        assert err["type"] == "server_error" and "shutting down" in err["message"], err
    for f in plains:
        err = assert_openai_error(f.result(timeout=60), 503)
        assert "shutting down" in err["message"]


@pytest.mark.parametrize("second_signal", [False, True])
def test_drain_end_cancels_with_an_error_event_and_done_or_an_error_response(second_signal):
    """When --drain-timeout expires, or at a second signal, every request left gets its error: streams an
    error event and [DONE], others a 503; a request still waiting for a running slot too."""
    s = ServerProcess("--drain-timeout", "600" if second_signal else "1", "--max-running", "3", api_key=None)
    try:
        streams, plains, pool = start_generations(s, 2, 2)  # one of the four waits for a slot
        t0 = time.time()
        s.proc.send_signal(signal.SIGTERM)
        if second_signal:
            time.sleep(0.5)
            assert s.proc.poll() is None  # still draining
            s.proc.send_signal(signal.SIGINT)
        check_cancelled(streams, plains)
        assert s.proc.wait(timeout=30) == 0
        assert time.time() - t0 < 15
        pool.shutdown()
        assert ("second signal" if second_signal else "cancelling them") in s.output()
    finally:
        s.stop()
