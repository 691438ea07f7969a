"""End-to-end tests of POST /v1/embeddings: `kestrel serve` on all-MiniLM-L6-v2 (an embedding-only server), a
server with --embedding-model beside the default generation model, and the official OpenAI client. The server's
vectors must be `kestrel embed`'s for the same texts."""

import array
import base64
import json
import math
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import (ServerProcess, assert_openai_error, cache_dir, kestrel_bin, post_raw, require_module,
                      skip_or_fail)

TEXTS = ["Hello world", "A kestrel hovers over the field.", "Falcons stoop.", "日本語のテキストも埋め込めます。",
         "The [MASK] sat on the mat."]


def minilm_dir():
    d = cache_dir() / "models" / "all-MiniLM-L6-v2"
    if not (d / "model.safetensors").exists():
        skip_or_fail(f"{d}/model.safetensors missing; run scripts/fetch_test_vocabs.sh")
    return d


@pytest.fixture(scope="module")
def embed_server():
    s = ServerProcess(model=minilm_dir())
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def eclient(embed_server):
    openai = require_module("openai")
    return openai.OpenAI(base_url=embed_server.base + "/v1", api_key=embed_server.api_key, max_retries=0, timeout=300)


def vectors(resp):
    assert [d.index for d in resp.data] == list(range(len(resp.data)))
    return [list(d.embedding) for d in resp.data]


def cosine(a, b):
    ab = sum(x * y for x, y in zip(a, b))
    return ab / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def max_diff(a, b):
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b))


def kestrel_embed(texts):
    r = subprocess.run([str(kestrel_bin()), "embed", "-m", str(minilm_dir()), "--threads", "1", *texts],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return [d["embedding"] for d in json.loads(r.stdout)["data"]]


def kestrel_tokenize(text):
    r = subprocess.run([str(kestrel_bin()), "tokenize", "-m", str(minilm_dir()), text], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def vocab_ids(*words):
    vocab = json.loads((minilm_dir() / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    return [vocab[w] for w in words]


def test_models_lists_the_embedding_model(eclient):
    models = eclient.models.list().data
    assert [m.id for m in models] == ["all-MiniLM-L6-v2"]
    assert eclient.models.retrieve("all-MiniLM-L6-v2").max_model_len == 256


def test_single_string(eclient):
    r = eclient.embeddings.create(model="all-MiniLM-L6-v2", input="Hello world", encoding_format="float")
    assert r.object == "list" and r.model == "all-MiniLM-L6-v2" and len(r.data) == 1
    assert r.data[0].object == "embedding"
    v = r.data[0].embedding
    assert len(v) == 384 and abs(sum(x * x for x in v) - 1) < 1e-5
    assert r.usage.prompt_tokens == 4 and r.usage.total_tokens == 4  # [CLS] hello world [SEP]


def test_batch_equals_kestrel_embed(eclient):
    got = vectors(eclient.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS, encoding_format="float"))
    want = kestrel_embed(TEXTS)
    assert len(got) == len(want) == len(TEXTS)
    for g, w in zip(got, want):
        assert max_diff(g, w) < 1e-6
    # Each text alone gives its vector in the batch: rows of a batch do not affect each other.
    alone = vectors(eclient.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS[1], encoding_format="float"))
    assert max_diff(alone[0], got[1]) < 1e-6


def test_token_id_inputs(eclient):
    ids = vocab_ids("[CLS]", "hello", "world", "[SEP]")
    text = vectors(eclient.embeddings.create(model="all-MiniLM-L6-v2", input="Hello world", encoding_format="float"))
    one = eclient.embeddings.create(model="all-MiniLM-L6-v2", input=ids, encoding_format="float")
    assert one.usage.prompt_tokens == 4
    assert max_diff(vectors(one)[0], text[0]) < 1e-6
    falcons = kestrel_tokenize("Falcons stoop.")
    many = eclient.embeddings.create(model="all-MiniLM-L6-v2", input=[ids, falcons], encoding_format="float")
    want = eclient.embeddings.create(model="all-MiniLM-L6-v2", input=["Hello world", "Falcons stoop."],
                                     encoding_format="float")
    assert many.usage.prompt_tokens == want.usage.prompt_tokens == 4 + len(falcons)
    for g, w in zip(vectors(many), vectors(want)):
        assert max_diff(g, w) < 1e-6


def test_base64_equals_float(embed_server, eclient):
    floats = vectors(eclient.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS[:2], encoding_format="float"))
    # The client asks for base64 by default and decodes it itself.
    default = vectors(eclient.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS[:2]))
    # The same float32 values: the float form is each float's shortest decimal, base64 its bytes.
    assert [array.array("f", v) for v in default] == [array.array("f", v) for v in floats]
    r = requests.post(embed_server.base + "/v1/embeddings", headers=embed_server.headers(), timeout=60,
                      json={"model": "all-MiniLM-L6-v2", "input": TEXTS[:2], "encoding_format": "base64"})
    assert r.status_code == 200, r.text
    for d, f in zip(r.json()["data"], floats):
        assert array.array("f", base64.b64decode(d["embedding"])) == array.array("f", f)


def test_dimensions_truncate_and_renormalize(eclient):
    full = vectors(eclient.embeddings.create(model="all-MiniLM-L6-v2", input="Hello world", encoding_format="float"))[0]
    short = vectors(eclient.embeddings.create(model="all-MiniLM-L6-v2", input="Hello world", dimensions=64,
                                              encoding_format="float"))[0]
    assert len(short) == 64 and abs(sum(x * x for x in short) - 1) < 1e-5
    norm = math.sqrt(sum(x * x for x in full[:64]))
    assert max_diff(short, [x / norm for x in full[:64]]) < 1e-6
    assert len(vectors(eclient.embeddings.create(model="all-MiniLM-L6-v2", input="x", dimensions=384))[0]) == 384
    openai = require_module("openai")
    for bad in (0, 385):
        with pytest.raises(openai.BadRequestError) as e:
            eclient.embeddings.create(model="all-MiniLM-L6-v2", input="x", dimensions=bad)
        assert "dimensions" in str(e.value)


def test_long_text_is_truncated_to_max_seq_length(eclient):
    long_text = " ".join(["kestrel"] * 600)
    r = eclient.embeddings.create(model="all-MiniLM-L6-v2", input=long_text, encoding_format="float")
    assert r.usage.prompt_tokens == 256
    assert max_diff(vectors(r)[0], kestrel_embed([long_text])[0]) < 1e-6


def test_concurrent_requests_match_sequential(embed_server, eclient):
    texts = [f"Sentence number {i} about birds of prey." for i in range(24)]
    alone = [vectors(eclient.embeddings.create(model="all-MiniLM-L6-v2", input=t, encoding_format="float"))[0]
             for t in texts]
    before = embed_server.metrics()

    def one(i):
        # Singles and pairs, so batches mix requests of different sizes.
        inp = texts[i] if i % 2 else [texts[i], texts[(i + 1) % len(texts)]]
        return i, vectors(eclient.embeddings.create(model="all-MiniLM-L6-v2", input=inp, encoding_format="float"))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(len(texts))))
    for i, got in results:
        want = [alone[i]] if i % 2 else [alone[i], alone[(i + 1) % len(texts)]]
        for g, w in zip(got, want):
            assert cosine(g, w) > 1 - 1e-5
            assert max_diff(g, w) < 1e-5
    after = embed_server.metrics()
    n_inputs = sum(1 if i % 2 else 2 for i in range(len(texts)))
    assert after["kestrel_embedding_requests_total"] - before["kestrel_embedding_requests_total"] == len(texts)
    assert after["kestrel_embedding_inputs_total"] - before["kestrel_embedding_inputs_total"] == n_inputs
    assert after["kestrel_embedding_tokens_total"] > before["kestrel_embedding_tokens_total"]
    batches = after["kestrel_embedding_batches_total"] - before["kestrel_embedding_batches_total"]
    batched = after["kestrel_embedding_batch_inputs_sum"] - before["kestrel_embedding_batch_inputs_sum"]
    assert batched == n_inputs and 1 <= batches <= len(texts)


def test_errors_are_openai_shaped_400s(embed_server):
    def post(body):
        return post_raw(embed_server, "/v1/embeddings", json.dumps(body) if not isinstance(body, str) else body)

    cases = [
        ({"model": "all-MiniLM-L6-v2", "input": ""}, "input", "empty string"),
        ({"model": "all-MiniLM-L6-v2", "input": []}, "input", "empty list"),
        ({"model": "all-MiniLM-L6-v2", "input": ["a", ""]}, "input[1]", "empty string"),
        ({"model": "all-MiniLM-L6-v2", "input": [[]]}, "input[0]", "empty list"),
        ({"model": "all-MiniLM-L6-v2", "input": 3}, "input", "must be a string"),
        ({"model": "all-MiniLM-L6-v2", "input": ["a", 1]}, "input[1]", "not a mix"),
        ({"model": "all-MiniLM-L6-v2"}, "input", "required"),
        ({"input": "a", "encoding_format": "int8"}, "encoding_format", "base64"),
        ({"input": "a", "dimensions": "8"}, "dimensions", "integer"),
        ({"input": "a", "temperature": 0}, "temperature", "unknown field"),
        ({"input": [999999]}, "input", "outside the embedding model's vocabulary"),
        ({"input": [[101] * 300]}, "input", "at most 256"),
    ]
    for body, param, says in cases:
        err = assert_openai_error(post(body), 400)
        assert err["param"] == param and says in err["message"], (body, err)
    err = assert_openai_error(post("{not json"), 400)
    assert err["code"] == "invalid_json"
    err = assert_openai_error(post({"model": "gpt-4", "input": "a"}), 404)
    assert err["code"] == "model_not_found"
    # Generation routes on an embedding-only server: a clear 400, and the server keeps serving.
    for path, body in (("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
                       ("/v1/completions", {"prompt": "hi"})):
        err = assert_openai_error(post_raw(embed_server, path, json.dumps(body)), 400)
        assert "embedding model" in err["message"] and "/v1/embeddings" in err["message"]
    assert requests.get(embed_server.base + "/health").status_code == 200
    assert embed_server.proc.poll() is None


def test_generation_server_refuses_embeddings(server):
    err = assert_openai_error(post_raw(server, "/v1/embeddings", json.dumps({"input": "hi"})), 400)
    assert "does not support embeddings" in err["message"] and err["code"] == "model_not_supported"


def test_one_server_generates_and_embeds(default_model):
    s = ServerProcess("--embedding-model", str(minilm_dir()))
    try:
        openai = require_module("openai")
        c = openai.OpenAI(base_url=s.base + "/v1", api_key=s.api_key, max_retries=0, timeout=300)
        ids = [m.id for m in c.models.list().data]
        assert len(ids) == 2 and ids[1] == "all-MiniLM-L6-v2", ids
        gen = ids[0]
        r = c.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS[:2], encoding_format="float")
        want = kestrel_embed(TEXTS[:2])
        assert all(max_diff(g, w) < 1e-6 for g, w in zip(vectors(r), want))
        out = c.chat.completions.create(model=gen, messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
                                        temperature=0)
        assert out.choices[0].message.content is not None
        with pytest.raises(openai.BadRequestError) as e:
            c.embeddings.create(model=gen, input="x")
        assert "does not support embeddings" in str(e.value)
        with pytest.raises(openai.BadRequestError) as e:
            c.completions.create(model="all-MiniLM-L6-v2", prompt="x", max_tokens=2)
        assert "embedding model" in str(e.value)
    finally:
        assert s.stop() == 0


@pytest.mark.parametrize("drain", [None, "0"])
def test_sigterm_during_embedding_requests(drain):
    """SIGTERM lets embedding requests in flight finish; with --drain-timeout 0 what has not run is cancelled
    with a 503. Either way every request is answered and the server exits with 0."""
    s = ServerProcess(*(["--drain-timeout", drain] if drain else []), model=minilm_dir())
    texts = [f"Sentence number {i}: a kestrel hovers over the meadow." for i in range(128)]
    with ThreadPoolExecutor(2) as pool:
        pending = [pool.submit(requests.post, s.base + "/v1/embeddings", json={"input": texts},
                               headers=s.headers(), timeout=300) for _ in range(2)]
        # Once the first pass has run, both requests are in flight (each takes several passes).
        while s.metrics()["kestrel_embedding_batches_total"] < 1:
            time.sleep(0.01)
        assert s.stop() == 0
        for f in pending:
            r = f.result()
            if drain:
                assert r.status_code in (200, 503), r.text
            else:
                assert r.status_code == 200, r.text
                assert len(r.json()["data"]) == len(texts)
