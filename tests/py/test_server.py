"""End-to-end tests of `kestrel serve` with the official OpenAI client (see conftest.py)."""

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import ServerProcess, assert_openai_error, post_raw, skip_or_fail, stream_one

GREEDY = {"temperature": 0}


def complete(client, model_id, prompt, **kw):
    return client.completions.create(model=model_id, prompt=prompt, **{**GREEDY, **kw})


def chat(client, model_id, content, **kw):
    return client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": content}],
                                          **{**GREEDY, **kw})


def test_health_and_models(server, client, model_id):
    assert requests.get(server.base + "/health").json() == {"status": "ok"}
    assert requests.get(server.base + "/version").json()["version"]
    models = client.models.list().data
    assert len(models) == 1 and models[0].id == model_id
    assert client.models.retrieve(model_id).id == model_id


def test_completion(client, model_id):
    r = complete(client, model_id, "The capital of France is", max_tokens=8)
    choice = r.choices[0]
    assert r.object == "text_completion" and r.model == model_id
    assert choice.finish_reason in ("length", "stop") and choice.text
    assert r.usage.prompt_tokens > 0
    assert r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_every_answer_gets_a_request_log_line(server, client, model_id):
    r = complete(client, model_id, "Request log line", max_tokens=3)
    requests.post(server.base + "/v1/completions", data="{not json", headers=server.headers())
    requests.get(server.base + "/no/such/route")
    log = server.output()
    want = "POST /v1/completions 200 "
    lines = [l for l in log.splitlines() if want in l and f"{r.usage.prompt_tokens} prompt + " in l]
    assert lines and lines[-1].endswith(f"+ {r.usage.completion_tokens} generated tokens"), log[-2000:]
    assert any("POST /v1/completions 400 " in l and "invalid_json" in l for l in log.splitlines()), log[-2000:]
    assert any("GET /no/such/route 404 " in l for l in log.splitlines()), log[-2000:]


def test_request_log_can_be_turned_off():
    s = ServerProcess("--no-log-requests")
    try:
        requests.get(s.base + "/health")
        assert "GET /health" not in s.output()
    finally:
        s.stop()


def test_cors_is_opt_in(server, model_id):
    body = {"model": model_id, "prompt": "cors", "max_tokens": 1}
    origin = {"Origin": "http://page.example"}
    # Off by default: no header a browser would accept, no preflight answer.
    r = requests.post(server.base + "/v1/completions", json=body, headers={**server.headers(), **origin})
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers
    pre = requests.options(server.base + "/v1/completions", headers={**origin, "Access-Control-Request-Method": "POST"})
    assert pre.status_code in (401, 404, 405) and "Access-Control-Allow-Origin" not in pre.headers
    s = ServerProcess("--cors-origin", "http://page.example")
    try:
        pre = requests.options(s.base + "/v1/chat/completions",
                               headers={**origin, "Access-Control-Request-Method": "POST",
                                        "Access-Control-Request-Headers": "authorization, content-type"})
        assert pre.status_code == 200
        assert pre.headers["Access-Control-Allow-Origin"] == "http://page.example"
        assert "POST" in pre.headers["Access-Control-Allow-Methods"]
        assert "authorization" in pre.headers["Access-Control-Allow-Headers"].lower()
        r = requests.post(s.base + "/v1/completions", json=body, headers={**s.headers(), **origin})
        assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "http://page.example"
        other = requests.post(s.base + "/v1/completions", json=body,
                              headers={**s.headers(), "Origin": "http://elsewhere.example"})
        assert other.status_code == 200 and "Access-Control-Allow-Origin" not in other.headers
    finally:
        s.stop()


def test_chat(client, model_id):
    r = chat(client, model_id, "Say hello in one word.", max_tokens=16)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content
    assert r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 5


def test_max_tokens_and_max_completion_tokens(client, model_id):
    r = complete(client, model_id, "Count: 1, 2, 3,", max_tokens=5, extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 5 and r.choices[0].finish_reason == "length"
    r = chat(client, model_id, "Tell me a long story.", max_completion_tokens=3)
    assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length"


def test_streaming_chat_matches_non_streaming(client, model_id):
    ref = chat(client, model_id, "Name three colors.", max_tokens=24)
    stream = chat(client, model_id, "Name three colors.", max_tokens=24, stream=True,
                  stream_options={"include_usage": True})
    text, finish, usage, roles = "", None, None, []
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.role:
                roles.append(c.delta.role)
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert roles == ["assistant"]
    assert text == ref.choices[0].message.content
    assert finish == ref.choices[0].finish_reason
    assert usage.completion_tokens == ref.usage.completion_tokens
    assert usage.prompt_tokens == ref.usage.prompt_tokens


def test_streaming_completion(client, model_id):
    ref = complete(client, model_id, "Once upon a time", max_tokens=12)
    pieces = [c.choices[0].text for c in complete(client, model_id, "Once upon a time", max_tokens=12, stream=True)
              if c.choices]
    assert "".join(pieces) == ref.choices[0].text


def test_stop_strings(client, model_id):
    ref = complete(client, model_id, "List: apple, banana,", max_tokens=24, extra_body={"ignore_eos": True})
    text = ref.choices[0].text
    assert len(text) > 10
    stop = text[6:9]
    r = complete(client, model_id, "List: apple, banana,", max_tokens=24, stop=[stop, "@@never@@"])
    assert r.choices[0].text == text[:text.find(stop)]
    assert r.choices[0].finish_reason == "stop"
    # Streaming never shows the stop string, not even split across chunks.
    s = "".join(c.choices[0].text for c in complete(client, model_id, "List: apple, banana,", max_tokens=24,
                                                       stop=stop, stream=True) if c.choices)
    assert s == text[:text.find(stop)]


def tokenize(server, **body):
    r = requests.post(server.base + "/tokenize", json=body, headers=server.headers(), timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["tokens"]


def test_stop_token_ids_extension(server, client, model_id):
    ref = complete(client, model_id, "Apples, pears and", max_tokens=10, logprobs=0, extra_body={"ignore_eos": True})
    pieces = ref.choices[0].logprobs.tokens
    # A generated token that tokenizes back to itself gives us its id.
    for i, piece in enumerate(pieces[2:], start=2):
        ids = tokenize(server, prompt=piece)
        if len(ids) == 1 and piece not in pieces[:i]:
            break
    else:
        skip_or_fail("no generated token round-trips through the tokenizer")
    r = complete(client, model_id, "Apples, pears and", max_tokens=10, extra_body={"ignore_eos": True,
                                                                                  "stop_token_ids": ids})
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == i + 1
    assert r.choices[0].text == "".join(pieces[:i])


def first_token_id(server, client, model_id, prompt):
    """The greedy first token of `prompt` and its id, when it tokenizes back to itself."""
    ref = complete(client, model_id, prompt, max_tokens=1, logprobs=0)
    piece = ref.choices[0].logprobs.tokens[0]
    ids = tokenize(server, prompt=piece)
    if len(ids) != 1:
        skip_or_fail(f"the first token {piece!r} does not round-trip through the tokenizer")
    return piece, ids[0]


def test_logit_bias_moves_and_bans_tokens(server, client, model_id):
    prompt = "The capital of France is"
    piece, tid = first_token_id(server, client, model_id, prompt)
    banned = complete(client, model_id, prompt, max_tokens=1, logprobs=1, logit_bias={str(tid): -100})
    assert banned.choices[0].logprobs.tokens[0] != piece
    # The reported logprobs stay the model's own: the banned token still leads the alternatives.
    assert piece in banned.choices[0].logprobs.top_logprobs[0]
    forced = chat(client, model_id, "Say hello.", max_tokens=3, logit_bias={str(tid): 100})
    assert forced.choices[0].message.content.lstrip().startswith(piece.strip())
    r = post_raw(server, "/v1/completions", json.dumps({"prompt": "x", "logit_bias": {"99999999": 1}}).encode())
    assert assert_openai_error(r, 400)["param"] == "logit_bias"


def test_min_tokens_and_include_stop_str_in_output(server, client, model_id):
    # A chat answer that ends by itself (end of turn) well before max_tokens...
    short = chat(client, model_id, "Reply with just the word yes.", max_tokens=64)
    assert short.choices[0].finish_reason == "stop" and short.usage.completion_tokens < 40
    n = short.usage.completion_tokens + 8
    # ...keeps going to min_tokens: end-of-generation tokens cannot be drawn before.
    longer = chat(client, model_id, "Reply with just the word yes.", max_tokens=64, extra_body={"min_tokens": n})
    assert longer.usage.completion_tokens >= n
    ref = complete(client, model_id, "List: apple, banana,", max_tokens=24, extra_body={"ignore_eos": True})
    text = ref.choices[0].text
    stop = text[6:9]
    kept = complete(client, model_id, "List: apple, banana,", max_tokens=24, stop=[stop],
                    extra_body={"include_stop_str_in_output": True})
    assert kept.choices[0].text == text[:text.find(stop) + len(stop)]
    assert kept.choices[0].finish_reason == "stop"


def test_no_field_is_silently_ignored(server, client, model_id):
    base = {"model": model_id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    # Structured-output fields are implemented (tests/py/test_structured_output.py).
    for extra, param in [({"functions": [{"name": "f"}]}, "functions"),
                         ({"typical_p": 0.5}, "typical_p"),
                         ({"prompt_logprobs": 1}, "prompt_logprobs"),
                         ({"store": True}, "store"),
                         ({"no_such_option": 1}, "no_such_option")]:
        r = post_raw(server, "/v1/chat/completions", json.dumps({**base, **extra}).encode())
        assert assert_openai_error(r, 400)["param"] == param, extra
    # Harmless fields and chat_template_kwargs are accepted.
    ok = client.chat.completions.create(**base, user="u-1", metadata={"run": "t"}, store=False,
                                        extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert ok.choices[0].message.content is not None


def test_absent_sampling_fields_take_the_servers_defaults(client, model_id):
    greedy = complete(client, model_id, "The capital of France is", max_tokens=12)  # temperature=0 sent
    s = ServerProcess("--temp", "0", "-v")
    try:
        assert "sampling: greedy;" in s.output()
        r = requests.post(s.base + "/v1/completions", headers=s.headers(), timeout=120,
                          json={"prompt": "The capital of France is", "max_tokens": 12})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == greedy.choices[0].text
    finally:
        s.stop()


def test_seed_determinism(client, model_id):
    kw = {"max_tokens": 16, "temperature": 1.0, "top_p": 0.95}
    a = complete(client, model_id, "My favourite animal is", seed=42, **kw).choices[0].text
    b = complete(client, model_id, "My favourite animal is", seed=42, **kw).choices[0].text
    assert a == b
    others = {complete(client, model_id, "My favourite animal is", seed=s, **kw).choices[0].text for s in (1, 2, 3)}
    assert len(others | {a}) > 1


def test_chat_logprobs(client, model_id):
    r = chat(client, model_id, "Say yes.", max_tokens=6, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for item in content:
        assert item.logprob <= 0 and len(item.top_logprobs) == 3
        assert item.top_logprobs[0].token == item.token  # greedy picks the most likely token
        assert abs(item.top_logprobs[0].logprob - item.logprob) < 1e-5
        assert bytes(item.bytes).decode("utf-8", errors="replace") == item.token or item.bytes


def test_completion_logprobs(client, model_id):
    r = complete(client, model_id, "Hello", max_tokens=5, logprobs=2, extra_body={"ignore_eos": True})
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 5
    assert all(len(t) == 2 for t in lp.top_logprobs)
    assert lp.text_offset[0] == 0


def test_token_id_prompt_and_tokenize_routes(server, client, model_id):
    text = complete(client, model_id, "Hello there", max_tokens=6).choices[0].text
    ids = tokenize(server, prompt="Hello there")
    assert complete(client, model_id, ids, max_tokens=6).choices[0].text == text
    r = requests.post(server.base + "/detokenize", json={"tokens": ids}, headers=server.headers())
    assert r.json()["prompt"] == "Hello there"
    chat_ids = tokenize(server, messages=[{"role": "user", "content": "Hi"}])
    assert chat(client, model_id, "Hi", max_tokens=1).usage.prompt_tokens == len(chat_ids)


def test_prefix_cache_reuses_shared_system_prompt(client, model_id):
    system = "You are a helpful assistant. " * 20
    msgs = lambda q: [{"role": "system", "content": system}, {"role": "user", "content": q}]
    client.chat.completions.create(model=model_id, messages=msgs("Hi"), max_tokens=2, temperature=0)
    r = client.chat.completions.create(model=model_id, messages=msgs("Hello"), max_tokens=2, temperature=0)
    assert r.usage.prompt_tokens_details.cached_tokens >= 96


def test_32_concurrent_greedy_requests_equal_each_alone(client, model_id):
    prompts = [f"Write a short sentence about the number {i}." for i in range(32)]
    alone = [chat(client, model_id, p, max_tokens=10).choices[0].message.content for p in prompts]
    with ThreadPoolExecutor(32) as pool:
        together = list(pool.map(lambda p: chat(client, model_id, p, max_tokens=10).choices[0].message.content,
                                 prompts))
    assert together == alone


def test_load_64_concurrent_streams_no_failures_no_leaks(server, model_id):
    def wave(n):
        with ThreadPoolExecutor(64) as pool:
            return list(pool.map(lambda i: stream_one(server, model_id, i, 4 + i % 13), range(n)))

    # Warm up with the same requests: allocator arenas and thread stacks settle, and the KV blocks these
    # prompts and answers use are touched once (the CPU cache is allocated lazily, so a block's first use
    # adds 1.5 MB of resident memory with the default model: that is the cache filling, not a leak).
    wave(128)
    rss_before = server.rss_kib()
    results = wave(128)
    assert len(results) == 128 and all(n >= 2 for n in results)
    m = server.metrics()  # the engine publishes its stats before it sends a step's events
    assert m["kestrel_num_requests_running"] == 0 and m["kestrel_num_requests_waiting"] == 0
    assert m["kestrel_kv_blocks_used"] == 0
    assert m["kestrel_kv_blocks_free"] + m["kestrel_kv_blocks_cached"] == m["kestrel_kv_blocks_total"]
    assert m.get('kestrel_requests_total{status="500"}', 0) == 0
    assert m["kestrel_time_to_first_token_seconds_count"] >= 192
    assert server.rss_kib() - rss_before < 64 * 1024, "memory grew during the load test"


def test_client_disconnect_cancels_and_frees_blocks(server, model_id):
    body = {"model": model_id, "stream": True, "max_tokens": 1500, "ignore_eos": True,
            "messages": [{"role": "user", "content": "Write forever."}]}
    r = requests.post(server.base + "/v1/chat/completions", json=body, headers=server.headers(), stream=True)
    lines = r.iter_lines()
    for _ in range(3):
        next(lines)
    assert server.metrics()["kestrel_num_requests_running"] == 1
    r.close()
    for _ in range(100):  # the engine notices at its next step
        m = server.metrics()
        if m["kestrel_num_requests_running"] == 0:
            break
        time.sleep(0.05)
    assert m["kestrel_num_requests_running"] == 0 and m["kestrel_kv_blocks_used"] == 0
    assert m['kestrel_requests_total{status="499"}'] >= 1


@pytest.mark.parametrize("path,body,status,param", [
    ("/v1/chat/completions", b"{not json", 400, None),
    ("/v1/chat/completions", b"[]", 400, None),
    ("/v1/chat/completions", json.dumps({"messages": "hi"}).encode(), 400, "messages"),
    ("/v1/chat/completions", json.dumps({"messages": []}).encode(), 400, "messages"),
    ("/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "x"}], "max_tokens": -5}).encode(),
     400, "max_tokens"),
    ("/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "x"}],
                                         "max_tokens": 10**9}).encode(), 400, "max_tokens"),
    ("/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}).encode(),
     400, "temperature"),
    ("/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "x"}], "n": 3}).encode(), 400, "n"),
    ("/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "x"}], "model": "gpt-9"}).encode(),
     404, "model"),
    ("/v1/completions", json.dumps({"prompt": "word " * 3000}).encode(), 400, "prompt"),
    ("/v1/completions", json.dumps({"prompt": [1, 2, 10**7]}).encode(), 400, None),
    ("/v1/completions", b'{"prompt": "bad \xff\xfe utf8"}', 400, None),
    ("/v1/completions", json.dumps({"prompt": "x", "stop": 5}).encode(), 400, "stop"),
])
def test_bad_input_gets_4xx_and_openai_error(server, client, model_id, path, body, status, param):
    err = assert_openai_error(post_raw(server, path, body), status)
    if param:
        assert err["param"] == param
    assert complete(client, model_id, "Still alive?", max_tokens=2).choices[0].text is not None


def test_oversized_body_wrong_key_and_unknown_route(server, client, model_id):
    assert_openai_error(post_raw(server, "/v1/completions", b'{"prompt": "' + b"a" * (5 << 20) + b'"}'), 413)
    assert_openai_error(post_raw(server, "/v1/completions", b'{"prompt": "x"}',
                                 headers={"Authorization": "Bearer wrong"}), 401)
    r = requests.post(server.base + "/v1/completions", data=b'{"prompt": "x"}')
    assert_openai_error(r, 401)
    assert_openai_error(requests.get(server.base + "/v1/nothing", headers=server.headers()), 404)
    assert_openai_error(requests.get(server.base + "/v1/completions", headers=server.headers()), 405)
    with pytest.raises(Exception) as e:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert getattr(e.value, "status_code", None) == 404
    # Raw garbage on a socket gets a 400 and the server keeps going.
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"\x00\x01GARBAGE\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 400")
    assert complete(client, model_id, "ok", max_tokens=1).usage.completion_tokens == 1


def test_queue_full_429_and_graceful_shutdown():
    """A second server with one slot and a one-request queue: overflow gets 429; SIGTERM lets the
    in-flight stream finish and exits 0."""
    s = ServerProcess("--max-running", "1", "--max-queue", "1", api_key=None)
    try:
        body = {"prompt": "Tell me a story.", "max_tokens": 64, "ignore_eos": True, "temperature": 0}

        def post(_):
            return requests.post(s.base + "/v1/completions", json=body, timeout=300).status_code

        with ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(post, range(6)))
        # One request is admitted or queued at a time; the near-simultaneous rest overflow the queue.
        assert codes.count(200) >= 1 and codes.count(429) >= 1 and set(codes) <= {200, 429}, codes
        r = requests.post(s.base + "/v1/completions", json={"prompt": "x", "max_tokens": 1})
        assert r.status_code == 200

        stream = requests.post(s.base + "/v1/completions", json={**body, "stream": True}, stream=True, timeout=300)
        lines = stream.iter_lines()
        next(lines)
        done = []
        reader = threading.Thread(target=lambda: done.extend(line for line in lines if line))
        reader.start()
        time.sleep(0.2)
        code = s.stop()
        reader.join(timeout=60)
        assert done and done[-1] == b"data: [DONE]"
        assert code == 0
    finally:
        s.stop()
