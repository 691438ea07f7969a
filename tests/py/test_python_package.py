"""The `kestrel` Python package (`pip install .`, which scripts/test.sh runs): batched generate, stream,
chat, tokenize, and errors as exceptions — checked against the `kestrel` binary on the default model."""
import subprocess
import threading
import time

import pytest

from conftest import kestrel_bin, require_binary, require_model, require_module

GREEDY = dict(temperature=0.0)


@pytest.fixture(scope="module")
def kestrel():
    return require_module("kestrel")


@pytest.fixture(scope="module")
def llm(kestrel):
    return kestrel.LLM(str(require_model()), threads=2, n_ctx=2048, max_running=8)


def test_generate_matches_the_binary_and_batches(kestrel, llm):
    require_binary()
    prompt = "The capital of France is"
    cli = subprocess.run([str(kestrel_bin()), "run", "--raw", prompt, "-n", "12", "-t", "2", "--temp", "0"],
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    sp = kestrel.SamplingParams(max_tokens=12, **GREEDY)
    alone = llm.generate(prompt, sp)
    assert len(alone) == 1 and alone[0].text == cli.stdout.rstrip("\n")
    assert alone[0].finish_reason in ("length", "stop") and len(alone[0].token_ids) <= 12
    prompts = [prompt, "1, 2, 3, 4,", "Once upon a time", "def add(a, b):"] * 3
    batch = llm.generate(prompts, sp)
    assert [c.text for c in batch[:1]] == [alone[0].text]
    assert batch[0].text == batch[4].text == batch[8].text  # the same prompt, batched with others
    assert all(c.prompt_tokens > 0 for c in batch)


def test_stream_gives_the_same_text_piece_by_piece(kestrel, llm):
    sp = kestrel.SamplingParams(max_tokens=16, **GREEDY)
    whole = llm.generate("Once upon a time", sp)[0].text
    stream = llm.stream("Once upon a time", sp)
    pieces = list(stream)
    assert "".join(pieces) == whole and len(pieces) > 1
    assert stream.finish_reason in ("length", "stop")


def test_chat_template_and_stop(kestrel, llm):
    msgs = [{"role": "user", "content": "What is 2 + 2? Answer with a number."}]
    assert "What is 2 + 2?" in llm.apply_chat_template(msgs)
    reply = llm.chat(msgs, kestrel.SamplingParams(max_tokens=24, **GREEDY))
    assert reply.text.strip() and reply.finish_reason in ("length", "stop")
    assert "".join(llm.stream_chat(msgs, kestrel.SamplingParams(max_tokens=24, **GREEDY))) == reply.text
    stopped = llm.generate("1, 2, 3, 4,", kestrel.SamplingParams(max_tokens=40, stop=["8"], **GREEDY))[0]
    assert "8" not in stopped.text and stopped.finish_reason == "stop"


def test_seeds_tokenizer_and_errors(kestrel, llm):
    sp = kestrel.SamplingParams(temperature=1.0, seed=7, max_tokens=12)
    assert llm.generate("A poem:", sp)[0].text == llm.generate("A poem:", sp)[0].text
    ids = llm.tokenize("Hello world", add_special=False)
    assert ids and llm.detokenize(ids) == "Hello world"
    with pytest.raises(kestrel.KestrelError, match="context"):
        llm.generate("word " * 3000, kestrel.SamplingParams(max_tokens=4))
    with pytest.raises(kestrel.KestrelError, match="top_p"):
        llm.generate("x", kestrel.SamplingParams(top_p=5.0))
    with pytest.raises(kestrel.KestrelError):
        kestrel.LLM("/no/such/model.gguf")


def test_generate_releases_the_gil(kestrel, llm):
    # Counts the ticks that land inside the generate call and compares them with its length, so a fast
    # machine (or a story that ends early) cannot make the check pass or fail by timing alone.
    ticks = []
    done = threading.Event()

    def ticker():
        while not done.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.01)

    t = threading.Thread(target=ticker)
    t.start()
    try:
        time.sleep(0.02)
        start = time.monotonic()
        llm.generate(["Tell me a story."] * 4, kestrel.SamplingParams(max_tokens=64, ignore_eos=True, **GREEDY))
        end = time.monotonic()
    finally:
        done.set()
        t.join()
    inside = sum(start < tick < end for tick in ticks)
    assert end - start > 0.05, "generating 4 x 64 tokens should take longer than 50 ms on a CPU"
    assert inside >= max(3, 0.25 * (end - start) / 0.01), \
        f"another Python thread ran only {inside} times in {end - start:.2f} s of generation"


def test_structured_output(kestrel, llm):
    import json
    import re
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 16},
                                               "age": {"type": "integer", "minimum": 0, "maximum": 120}},
              "required": ["name", "age"]}
    conv = [{"role": "user", "content": "Bob is 30. Answer as JSON."}]
    out = llm.chat(conv, kestrel.SamplingParams(max_tokens=64, json_schema=schema, **GREEDY))
    value = json.loads(out.text)
    assert set(value) == {"name", "age"} and 0 <= value["age"] <= 120 and out.finish_reason == "stop"
    out = llm.generate("My phone number is", kestrel.SamplingParams(max_tokens=20, regex=r" \d{3}-\d{4}", **GREEDY))
    assert re.fullmatch(r" \d{3}-\d{4}", out[0].text)
    out = llm.generate("The sky is", kestrel.SamplingParams(max_tokens=5, choice=["blue", "green"], **GREEDY))
    assert out[0].text in ("blue", "green")
    with pytest.raises(kestrel.KestrelError, match="at most one"):
        llm.generate("x", kestrel.SamplingParams(regex="a", grammar='root ::= "a"'))
    with pytest.raises(kestrel.KestrelError, match="left-recursive"):
        llm.generate("x", kestrel.SamplingParams(grammar='root ::= root "a"'))


def test_kv_type_selects_the_cache_format(kestrel):
    # A quantized cache through the package: the same greedy text as the binary with the same --kv-type.
    require_binary()
    prompt = "The capital of France is"
    cli = subprocess.run([str(kestrel_bin()), "run", "--raw", prompt, "-n", "12", "-t", "2", "--temp", "0", "--kv-type",
                          "int8"], capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    llm = kestrel.LLM(str(require_model()), threads=2, n_ctx=512, max_running=2, kv_type="int8")
    assert llm.generate(prompt, kestrel.SamplingParams(max_tokens=12, **GREEDY))[0].text == cli.stdout.rstrip("\n")
    with pytest.raises(kestrel.KestrelError, match="kv_type"):
        kestrel.LLM(str(require_model()), kv_type="int3")
