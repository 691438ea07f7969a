"""`kestrel serve --kv-type`: a quantized KV cache under concurrent streaming load (no failures, no leaked
blocks) and prefix-cache hits on quantized blocks that answer exactly as a fresh computation does. The
windowed formats (SKVQ; KIVI-2, whose keys are scaled per channel over each sealed 32-token block) share
only blocks that a fresh prefill would already hold as codes (not the last 128 tokens' open blocks), so the
prompt is long enough to leave shareable blocks behind the window."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import ServerProcess, stream_one


@pytest.fixture(scope="module", params=["fp8", "int8", "int4", "int2", "skvq", "kivi2"])
def kv_server(request):
    s = ServerProcess("--kv-type", request.param)
    yield s
    assert s.stop() == 0


def model_id(server):
    return requests.get(server.base + "/v1/models", headers=server.headers(), timeout=30).json()["data"][0]["id"]


def chat(server, messages, **kw):
    body = {"model": model_id(server), "messages": messages, "temperature": 0, **kw}
    r = requests.post(server.base + "/v1/chat/completions", json=body, headers=server.headers(), timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def test_load_on_a_quantized_cache_frees_every_block(kv_server):
    with ThreadPoolExecutor(64) as pool:
        model = model_id(kv_server)
        results = list(pool.map(lambda i: stream_one(kv_server, model, i, 4 + i % 13), range(96)))
    assert all(n >= 2 for n in results)
    m = kv_server.metrics()
    assert m["kestrel_num_requests_running"] == 0 and m["kestrel_num_requests_waiting"] == 0
    assert m["kestrel_kv_blocks_used"] == 0
    assert m["kestrel_kv_blocks_free"] + m["kestrel_kv_blocks_cached"] == m["kestrel_kv_blocks_total"]
    assert m.get('kestrel_requests_total{status="500"}', 0) == 0


def test_prefix_hits_on_quantized_blocks_answer_as_fresh(kv_server):
    # Prefill writes quantized pages and attends over them, so a request whose prefix comes from the cache
    # reads exactly what its own prefill would have written: greedy answers must be identical.
    system = "You are a terse assistant who answers questions about birds of prey. " * 20
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": "What does a kestrel eat?"}]
    fresh = chat(kv_server, msgs, max_tokens=24)
    again = chat(kv_server, msgs, max_tokens=24)
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] >= 96
    assert again["choices"][0]["message"]["content"] == fresh["choices"][0]["message"]["content"]
    other = chat(kv_server, [msgs[0], {"role": "user", "content": "And a buzzard?"}], max_tokens=8)
    assert other["usage"]["prompt_tokens_details"]["cached_tokens"] >= 96
