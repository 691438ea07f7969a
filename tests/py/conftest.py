"""Fixtures for the end-to-end tests: a `kestrel serve` process on the default model.

The binary is $KESTREL_BIN or build/kestrel; the model is $KESTREL_MODEL or the one scripts/setup.sh
caches ($KESTREL_CACHE, default ~/.cache/kestrel). Tests skip (with the reason) when either is missing,
except under CI=true (set by .ci/run), where CI has run scripts/setup.sh and a skip would hide a test that
did not run: there they fail. $KESTREL_SERVE_ARGS adds server flags (the GPU machine runs these tests
with "--device cuda" on a synthetic model: scripts/gpu/run_all.sh).
"""

import importlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
API_KEY = "kestrel-test-key"


def kestrel_bin():
    return Path(os.environ.get("KESTREL_BIN", REPO / "build" / "kestrel"))


def cache_dir():
    return Path(os.environ.get("KESTREL_CACHE") or Path.home() / ".cache" / "kestrel")


def model_path():
    return Path(os.environ.get("KESTREL_MODEL") or cache_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf")


def in_ci():
    return os.environ.get("CI", "").lower() == "true"


def skip_or_fail(reason):
    """Skips the test, or fails it under CI=true, where everything a test needs must be there."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: this test must run, not skip)", pytrace=False)
    pytest.skip(reason)


def require_binary():
    if not kestrel_bin().exists():
        skip_or_fail(f"{kestrel_bin()} not built (set KESTREL_BIN)")
    return kestrel_bin()


def require_model():
    if not model_path().exists():
        skip_or_fail(f"default model not at {model_path()}; run scripts/setup.sh")
    return model_path()


def require_module(name):
    try:
        return importlib.import_module(name)
    except ImportError:
        skip_or_fail(f"Python module {name} is not installed (scripts/requirements-test.txt)")


@pytest.fixture
def default_model():
    return require_model()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_healthy(proc, base, describe, seconds=120):
    """Polls base/health until it answers 200; raises (with describe()) if proc exits or time runs out."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"kestrel serve exited with {proc.returncode}:\n{describe()}")
        try:
            if requests.get(base + "/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"kestrel serve did not come up in {seconds} s:\n{describe()}")


def scrape_metrics(base, timeout=10):
    """The server's /metrics as {sample name with labels: value}."""
    values = {}
    for line in requests.get(base + "/metrics", timeout=timeout).text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def raw_exchange(port, data, half_close=False, timeout=30):
    """Sends raw bytes (optionally half-closing) and returns everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            out += chunk
    return out


class ServerProcess:
    """A running `kestrel serve` (on the default model unless `model` names another); stop() sends SIGTERM
    and returns the exit status."""

    def __init__(self, *extra_args, api_key=API_KEY, model=None):
        # A model the test names is one it has just written; only the default model can be missing.
        binary = require_binary()
        model = Path(model) if model else require_model()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key
        # One thread: the engine's step time stays steady on a busy 2-core CI machine, where a second
        # pool thread mostly waits to be scheduled.
        args = [str(binary), "serve", "-m", str(model), "--port", str(self.port), "--threads", "1",
                "--ctx-size", "2048", "--kv-cache-tokens", "16384", *os.environ.get("KESTREL_SERVE_ARGS", "").split(),
                *extra_args]
        if api_key:
            args += ["--api-key", api_key]
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"kestrel-serve-{self.port}.log", "w+")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        wait_until_healthy(self.proc, self.base, self.output)

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def headers(self):
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def metrics(self):
        return scrape_metrics(self.base)

    def rss_kib(self):
        return rss_kib(self.proc.pid)

    def stop(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def stream_one(server, model_id, i, max_tokens):
    """One sampled, streamed chat request (seed i); asserts it ends with [DONE] and returns its event count."""
    body = {"model": model_id, "stream": True, "max_tokens": max_tokens, "temperature": 0.8, "seed": i,
            "messages": [{"role": "user", "content": f"Tell me about topic number {i}."}]}
    with requests.post(server.base + "/v1/chat/completions", json=body, headers=server.headers(), stream=True,
                       timeout=300) as r:
        assert r.status_code == 200, r.text
        events = [line for line in r.iter_lines() if line]
    assert events[-1] == b"data: [DONE]"
    return len(events)


def post_raw(server, path, data, headers=None):
    h = {"Content-Type": "application/json", **server.headers(), **(headers or {})}
    return requests.post(server.base + path, data=data, headers=h, timeout=60)


def assert_openai_error(r, status):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


@pytest.fixture(scope="session")
def server():
    s = ServerProcess()
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="session")
def client(server):
    openai = require_module("openai")
    return openai.OpenAI(base_url=server.base + "/v1", api_key=server.api_key, max_retries=0, timeout=300)


@pytest.fixture(scope="session")
def model_id(client):
    return client.models.list().data[0].id
