"""End-to-end checks of the `kestrel` binary: the main subcommands on the default model, and bad input
(files, flags, prompts) giving one clear error line and a non-zero exit, never a crash."""
import array
import json
import pathlib
import shutil
import subprocess
import time

import pytest

from conftest import cache_dir, kestrel_bin, model_path, require_binary, skip_or_fail

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"

# Fails instead of skipping under CI=true (conftest.py).
needs_model = pytest.mark.usefixtures("default_model")


@pytest.fixture(autouse=True)
def binary():
    return require_binary()


def kestrel(*args, input=None, timeout=300):
    return subprocess.run([str(kestrel_bin()), *args], input=input, capture_output=True, text=True, timeout=timeout)


def assert_clean_error(r, fragment):
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "error:" in r.stderr and fragment in r.stderr, r.stderr
    assert "Sanitizer" not in r.stderr and "terminate" not in r.stderr


@needs_model
def test_run_greedy_is_deterministic_and_streams_text():
    a = kestrel("run", "--raw", "The capital of France is", "-n", "12", "-t", "2", "--temp", "0")
    b = kestrel("run", "--raw", "The capital of France is", "-n", "12", "-t", "2", "--temp", "0")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout.strip()
    assert "tok/s" in a.stderr


@needs_model
def test_seeded_sampling_repeats():
    args = ("run", "Write a haiku about rivers.", "-n", "24", "--temp", "0.9", "--top-p", "0.9", "--seed", "7")
    assert kestrel(*args).stdout == kestrel(*args).stdout


@needs_model
def test_chat_keeps_context_between_turns():
    r = kestrel("chat", "-n", "24", "--temp", "0", "-v", input="My name is Ada.\nWhat is my name?\n")
    assert r.returncode == 0, r.stderr
    # The second turn reuses the cached first turn instead of recomputing it.
    reused = [int(line.split("reused ")[1].split()[0]) for line in r.stderr.splitlines() if "reused" in line]
    assert len(reused) == 2 and reused[1] > 20, r.stderr


@needs_model
def test_chat_commands_stay_out_of_the_conversation():
    r = kestrel("chat", "-n", "4", "--temp", "0", "-v", input="/help\n/bogus x\n/exit\nnever sent\n")
    assert r.returncode == 0, r.stderr
    assert "/reset" in r.stderr and "Ctrl-C" in r.stderr
    assert "unknown command '/bogus'" in r.stderr
    assert r.stdout == "" and "reused" not in r.stderr  # nothing reached the model; /exit ended it


@needs_model
def test_chat_ctrl_c_stops_the_answer_not_the_session():
    import os
    import signal
    import time
    p = subprocess.Popen([str(kestrel_bin()), "chat", "--temp", "0", "-n", "2000", "-t", "2", "-v"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        p.stdin.write(b"Count from 1 to 500, one number per line.\n")
        p.stdin.flush()
        os.set_blocking(p.stdout.fileno(), False)
        got, t0 = b"", time.time()
        while len(got) < 20 and time.time() - t0 < 120:  # the answer is streaming
            got += p.stdout.read(64) or b""
            time.sleep(0.05)
        assert len(got) >= 20, got
        p.send_signal(signal.SIGINT)
        time.sleep(0.5)
        p.stdin.write(b"And now say hi.\n/exit\n")  # the session goes on: a second turn, then out
        p.stdin.flush()
        _, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
    err = err.decode()
    assert p.returncode == 0, err
    assert "stopped (Ctrl-C)" in err
    assert err.count("reused ") == 2, err  # both turns ran


@needs_model
def test_tokenize_info_and_stop_strings():
    r = kestrel("tokenize", "Hello world", "--no-bos")
    assert r.returncode == 0 and r.stdout.strip().startswith("[")
    r = kestrel("info")
    assert "architecture  llama" in r.stdout and "q4_1" in r.stdout
    r = kestrel("run", "--raw", "1, 2, 3, 4,", "-n", "40", "--stop", "8", "--temp", "0")
    assert r.returncode == 0 and "8" not in r.stdout


def test_embed_minilm_prints_openai_shaped_json(tmp_path):
    """`kestrel embed` on all-MiniLM-L6-v2: texts from arguments then --file, normalized vectors in order, equal
    to sentence-transformers' (tests/fixtures/encoder/) for a text of the golden set."""
    minilm = cache_dir() / "models" / "all-MiniLM-L6-v2"
    if not (minilm / "model.safetensors").exists():
        skip_or_fail(f"{minilm}/model.safetensors missing; run scripts/fetch_test_vocabs.sh")
    lines = tmp_path / "texts.txt"
    lines.write_text("Hello world\r\n日本語のテキストも埋め込めます。\n", encoding="utf-8")
    r = kestrel("embed", "-m", str(minilm), "Hello world", "The [MASK] sat on the mat.", "--file", str(lines))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["object"] == "list" and [d["index"] for d in out["data"]] == [0, 1, 2, 3]
    vecs = [d["embedding"] for d in out["data"]]
    assert all(len(v) == 384 and abs(sum(x * x for x in v) - 1) < 1e-5 for v in vecs)
    assert vecs[0] == vecs[2]  # the same text from an argument and from the file
    golden = json.loads((FIXTURES / "encoder" / "minilm_golden.json").read_text(encoding="utf-8"))
    ref = array.array("f", (FIXTURES / "encoder" / "minilm_golden.f32").read_bytes())
    i = golden["texts"].index("Hello world")
    assert sum(a * b for a, b in zip(vecs[0], ref[i * 384:(i + 1) * 384])) > 0.9999


def test_embed_errors_are_one_clear_line(tmp_path):
    assert "sentence embeddings" in kestrel("embed", "--help").stdout
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert_clean_error(kestrel("embed", "-m", str(tmp_path), "x"), "not a BERT encoder")
    assert_clean_error(kestrel("embed", "-m", str(tmp_path / "nope"), "x"), "not a directory")
    assert_clean_error(kestrel("embed", "-m", str(tmp_path)), "nothing to embed")
    assert_clean_error(kestrel("embed", "-m", str(tmp_path), "--file", str(tmp_path / "none.txt")), "cannot read")
    (tmp_path / "empty.txt").write_text("")
    assert_clean_error(kestrel("embed", "-m", str(tmp_path), "--file", str(tmp_path / "empty.txt")), "nothing to embed")
    (tmp_path / "config.json").unlink()
    assert_clean_error(kestrel("embed", "-m", str(tmp_path), "x"), "no config.json")


def test_tokenize_wordpiece_tokenizer_json(tmp_path):
    """A BERT tokenizer.json (or its directory) tokenizes without a decoder model; ids are HF tokenizers'."""
    minilm = cache_dir() / "vocab" / "all-MiniLM-L6-v2"
    if not (minilm / "tokenizer.json").exists():
        skip_or_fail(f"{minilm}/tokenizer.json missing; run scripts/fetch_test_vocabs.sh")
    text = "Hello, unaffable world! [MASK] 中文"
    for path in (minilm / "tokenizer.json", minilm):
        r = kestrel("tokenize", "-m", str(path), text)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == [101, 7592, 1010, 14477, 20961, 3468, 2088, 999, 103, 1746, 1861, 102]
    r = kestrel("tokenize", "-m", str(minilm), "Hi", "--no-bos", "--pieces")
    assert r.returncode == 0 and r.stdout.split() == ["7632", "'hi'"], r.stdout
    bad = json.loads((minilm / "tokenizer.json").read_text())
    bad["model"]["max_input_chars_per_word"] = "many"
    (tmp_path / "tokenizer.json").write_text(json.dumps(bad))
    assert_clean_error(kestrel("tokenize", "-m", str(tmp_path / "tokenizer.json"), "x"),
                       "max_input_chars_per_word must be a non-negative integer")


@needs_model
def test_perplexity_protocol_and_kl_reference(tmp_path):
    text = FIXTURES / "text" / "hamlet_act1_2.txt"
    saved = tmp_path / "ref.kppl"
    r = kestrel("perplexity", str(text), "-c", "128", "--chunks", "3", "--save-logits", str(saved))
    assert r.returncode == 0, r.stderr
    assert "Final estimate: PPL" in r.stdout
    r = kestrel("perplexity", str(text), "-c", "128", "--chunks", "3", "--kl-reference", str(saved))
    assert "KL divergence  mean 0.0000" in r.stdout and "same top-1     100.00%" in r.stdout
    r = kestrel("perplexity", str(text), "-c", "64", "--chunks", "3", "--kl-reference", str(saved))
    assert_clean_error(r, "different text")


@needs_model
def test_prompt_longer_than_context_is_a_clear_error():
    r = kestrel("run", "--raw", "word " * 400, "-c", "64")
    assert_clean_error(r, "context")


def test_bad_files_are_clear_errors(tmp_path):
    assert_clean_error(kestrel("info", "-m", str(tmp_path / "missing.gguf")), "does not exist")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOTAGGUF" + bytes(100))
    assert_clean_error(kestrel("info", "-m", str(bad)), str(bad))


def test_quantized_checkpoints_load_and_run(tmp_path):
    quant = FIXTURES / "models" / "quant"
    r = kestrel("info", "-m", str(quant / "tiny-llama-gptq-w3g64-v2"))
    assert r.returncode == 0, r.stderr
    assert "quantization  GPTQ 3-bit, groups of 64, asymmetric" in r.stdout and "u3 " in r.stdout
    r = kestrel("run", "-m", str(quant / "tiny-llama-awq-w4g32"), "--raw", "The king", "-n", "6", "--temp", "0")
    assert r.returncode == 0 and "generated 6 tokens" in r.stderr, r.stderr
    # An AWQ layout of another kernel: one clear line naming the field.
    bad = tmp_path / "gemv"
    shutil.copytree(quant / "tiny-llama-awq-w4g32", bad)
    config = json.loads((bad / "config.json").read_text())
    config["quantization_config"]["version"] = "gemv"
    (bad / "config.json").write_text(json.dumps(config))
    assert_clean_error(kestrel("run", "-m", str(bad), "hi"), "AWQ 'version' is 'gemv'")


@needs_model
def test_truncated_model_is_a_clear_error(tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(model_path().read_bytes()[: 5 << 20])
    assert_clean_error(kestrel("run", "-m", str(cut), "hi"), str(cut))


def test_bad_flags_explain_themselves():
    r = kestrel("run", "--top-p", "7", "hi")
    assert r.returncode != 0 and "top-p" in r.stderr
    r = kestrel("frobnicate")
    assert r.returncode != 0
    r = kestrel("run", "--variant=matmul", "-m", str(FIXTURES / "models" / "tiny-llama"), "hi")
    assert_clean_error(r, "op=name")
    r = kestrel("bench", "-m", str(FIXTURES / "models" / "tiny-llama"), "--mixed", "256")
    assert_clean_error(r, "--device cuda")


def test_synth_layers_keeps_widths_and_runs(tmp_path):
    out = tmp_path / "small-1l"
    r = kestrel("synth", "--preset", "small", "--layers", "1", "--seed", "2", "-t", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "(1 layer)" in r.stdout
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 1 and cfg["hidden_size"] == 512 and cfg["intermediate_size"] == 1536
    r = kestrel("run", "-m", str(out), "--raw", "-n", "4", "--ignore-eos", "-t", "2", "hello")
    assert r.returncode == 0, r.stderr
    r = kestrel("synth", "--preset", "small", "--layers", "0", "--out", str(tmp_path / "x"))
    assert r.returncode != 0 and "layers" in r.stderr


def test_version_unknown_commands_and_options_explain_themselves():
    r = kestrel("--version")
    assert r.returncode == 0 and r.stdout.startswith("kestrel "), (r.stdout, r.stderr)
    r = kestrel("rnu", "hi")
    assert r.returncode == 1 and "unknown command 'rnu'" in r.stderr and "did you mean 'run'" in r.stderr, r.stderr
    r = kestrel("run", "--temprature", "0.5", "hi")
    assert r.returncode != 0 and "did you mean '--temperature'" in r.stderr, r.stderr
    r = kestrel("run", "--help")
    assert "--n-predict INT:INT in [0 - 1048576]=256" in r.stdout, r.stdout  # defaults shown


@needs_model
def test_repeatable_options_leave_the_prompt_alone():
    # Each of these used to take the prompt as a second value and then wait on standard input.
    for extra in (["--stop", "."], ["--variant", "matmul=cpu.ref"]):
        r = kestrel("run", *extra, "--raw", "The capital of France is", "-n", "4", "-t", "2", input="", timeout=120)
        assert r.returncode == 0 and r.stdout.strip(), (extra, r.stderr)
        assert "prompt 5 tokens" in r.stderr or "prompt 6 tokens" in r.stderr, (extra, r.stderr)


@needs_model
def test_llama_cpp_spellings_and_prompt_file(tmp_path):
    prompt = tmp_path / "p.txt"
    prompt.write_text("The capital of France is")
    by_file = kestrel("run", "--raw", "-f", str(prompt), "-n", "6", "-t", "2", "-ngl", "99", "--device", "cpu",
                      "--seed", "5")
    by_flag = kestrel("run", "--raw", "-p", "The capital of France is", "-n", "6", "-t", "2", "--seed", "5")
    assert by_file.returncode == 0 and by_flag.returncode == 0, (by_file.stderr, by_flag.stderr)
    assert by_file.stdout == by_flag.stdout and by_file.stdout.strip()
    # The text's last line ends before the stats, which go to stderr alone.
    assert by_flag.stdout.endswith("\n") and "tok/s" not in by_flag.stdout


@needs_model
def test_one_sampling_policy_for_run_chat_and_serve(tmp_path):
    # The default model (a GGUF) sets no sampling: llama.cpp's defaults, a random seed.
    r = kestrel("run", "--raw", "Hello", "-n", "2", "-t", "2", "-v")
    assert r.returncode == 0, r.stderr
    assert "sampling: temperature 0.8, top_k 40, top_p 0.95, min_p 0.05; what the flags leave unset comes from " \
           "llama.cpp's defaults" in r.stderr, r.stderr
    # The stats line says how the text was drawn.
    assert "temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, seed " in r.stderr.splitlines()[-1], r.stderr
    r = kestrel("chat", "-n", "2", "-t", "2", "--top-k", "3", "-v", input="hi\n")
    assert "sampling: temperature 0.8, top_k 3, top_p 0.95, min_p 0.05;" in r.stderr, r.stderr
    # A Hugging Face model's generation_config.json, read as vLLM reads it: what it lacks is off.
    out = tmp_path / "m"
    assert kestrel("synth", "--preset", "tiny", "--out", str(out), "-t", "2").returncode == 0
    gen = json.loads((out / "generation_config.json").read_text())
    (out / "generation_config.json").write_text(json.dumps({**gen, "temperature": 0.3, "top_p": 0.5}))
    r = kestrel("run", "-m", str(out), "--raw", "hello", "-n", "2", "-t", "2", "--min-p", "0.1", "-v")
    assert "sampling: temperature 0.3, top_p 0.5, min_p 0.1; what the flags leave unset comes from the model's " \
           "generation_config.json" in r.stderr, r.stderr
    r = kestrel("serve", "--help")
    assert "--temp" in r.stdout and "the model's, else 0.8" in r.stdout, r.stdout


@needs_model
def test_chat_edits_the_line_and_recalls_history_on_a_terminal():
    import os
    import pty
    import select
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(kestrel_bin()), "chat", "--temp", "0", "-n", "4", "-t", "2"],
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    seen = b""

    def until(pattern, since=0, timeout=180):
        """Reads the terminal until `pattern` shows up after byte `since` of the output."""
        nonlocal seen
        end = time.time() + timeout
        while pattern not in seen[since:] and time.time() < end:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break
        return pattern in seen[since:]

    try:
        assert until(b"> "), seen
        os.write(master, b"hello\x1b[D\x1b[DX\r")  # Left twice, insert X: "helXlo"
        assert until(b"> helXlo\x1b[K\x1b[2D"), seen
        assert until(b"\r> \x1b[K", since=len(seen)), seen  # the answer, then the next (empty) prompt
        mark = len(seen)
        os.write(master, b"\x1b[A")  # Up: the message sent before
        assert until(b"> helXlo\x1b[K", since=mark), seen[mark:]
        os.write(master, b"\x15/exit\r")  # Ctrl-U clears it; /exit ends the session
        proc.wait(timeout=60)
        assert proc.returncode == 0, seen
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


@needs_model
def test_the_kv_cache_becomes_resident_only_as_it_fills():
    # An f32 cache for the default model's whole 8192-token context is 377 MB; a short run must not touch it
    # all (it did: 665 MB resident for a 92 MB model).
    import sys
    probe = ("import resource, subprocess, sys; "
             "r = subprocess.run(sys.argv[1:], capture_output=True); "
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", probe, str(kestrel_bin()), "run", "--raw", "Hello", "-n", "4", "-t",
                          "2"], capture_output=True, text=True, timeout=300).stdout.split()
    assert out[0] == "0" and int(out[1]) < 400 * 1024, out  # KiB


@needs_model
def test_seed_is_random_by_default_printed_and_repeatable():
    args = ("run", "--raw", "Once upon a time", "-n", "8", "-t", "2", "--temp", "1.0")
    runs = [kestrel(*args) for _ in range(2)]
    seeds = [r.stderr.split("seed ")[1].split()[0] for r in runs]
    assert all(r.returncode == 0 for r in runs) and seeds[0] != seeds[1], [r.stderr for r in runs]
    again = kestrel(*args, "--seed", seeds[0])
    assert again.stdout == runs[0].stdout, (again.stdout, runs[0].stdout)


@needs_model
def test_serve_takes_vllm_and_llama_cpp_spellings():
    # `serve MODEL` positional, --max-model-len, -np; the address is printed; the server answers /version.
    import queue
    import re
    import threading
    import urllib.request

    proc = subprocess.Popen([str(kestrel_bin()), "serve", str(model_path()), "-np", "3", "--max-model-len", "1024",
                             "--port", "0", "-t", "1"], stderr=subprocess.PIPE, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in proc.stderr], daemon=True).start()
    try:
        port = None
        while port is None:
            line = lines.get(timeout=120)  # queue.Empty fails the test if the address never comes
            m = re.search(r"serving .* on http://[0-9.]+:(\d+)", line)
            port = int(m.group(1)) if m else None
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=30) as r:
            assert json.load(r)["version"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=30) as r:
            assert json.load(r)["data"][0]["max_model_len"] == 1024
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@needs_model
def test_context_past_the_trained_length_warns():
    past = kestrel("run", "--raw", "Hello", "-n", "2", "-t", "2", "-c", "8200")  # the default model: 8192
    within = kestrel("run", "--raw", "Hello", "-n", "2", "-t", "2", "-c", "2048")
    assert past.returncode == 0 and within.returncode == 0, (past.stderr, within.stderr)
    assert "past the 8192 tokens" in past.stderr, past.stderr
    assert "past the" not in within.stderr, within.stderr


@needs_model
def test_run_and_chat_take_llama_cpp_grammar_flags(tmp_path):
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                               "age": {"type": "integer", "minimum": 0, "maximum": 99}},
              "required": ["name", "age"]}
    r = kestrel("run", "Bob is 30. Answer in JSON.", "-n", "60", "-t", "2", "--temp", "0", "-j", json.dumps(schema))
    assert r.returncode == 0, r.stderr
    value = json.loads(r.stdout)
    assert set(value) == {"name", "age"} and 0 <= value["age"] <= 99
    grammar = tmp_path / "yn.gbnf"
    grammar.write_text('root ::= "yes" | "no"\n')
    r = kestrel("run", "Is the sky blue?", "-n", "8", "-t", "2", "--grammar-file", str(grammar))
    assert r.returncode == 0 and r.stdout.strip() in ("yes", "no"), (r.stdout, r.stderr)
    r = kestrel("chat", "-n", "8", "-t", "2", "--grammar", 'root ::= [0-9]{1,3}', input="Pick a number.\n")
    assert r.returncode == 0 and r.stdout.strip().isdigit(), (r.stdout, r.stderr)
    assert_clean_error(kestrel("run", "x", "--grammar", "root ::= root \"a\""), "left-recursive")
    assert_clean_error(kestrel("run", "x", "-j", "{\"type\": \"object\", \"not\": {}}"), "not")
    assert_clean_error(kestrel("run", "x", "--grammar", "root ::= \"a\"", "-j", "{}"), "give one of")
