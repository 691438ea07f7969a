"""`kestrel quantize` against the gguf package (the reference implementation of ggml's formats in Python):
every quantized tensor is byte for byte what gguf.quants.quantize makes of the same f32 data, everything
else and the metadata are kept, llama.cpp's file-type key says what the file holds, the result runs, and bad
requests fail cleanly without leaving a file behind."""
import subprocess

import pytest

from conftest import kestrel_bin, require_binary, require_module
from test_cli import FIXTURES, assert_clean_error

SOURCE = FIXTURES / "models" / "tiny-llama-f32.gguf"
# llama.cpp's llama_ftype of each type's files.
FILE_TYPES = {"q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9}
K_FILE_TYPES = {"q2_k": 10, "q3_k": 11, "q4_k_m": 15, "q5_k_m": 17, "q6_k": 18}


def kestrel(*args):
    return subprocess.run([str(kestrel_bin()), *args], capture_output=True, text=True, timeout=300)


def field(reader, key):
    f = reader.fields[key]
    return f.parts[f.data[0]].tolist()


@pytest.mark.parametrize("name", sorted(FILE_TYPES))
def test_quantized_tensors_match_the_gguf_package(tmp_path, name):
    require_binary()
    gguf = require_module("gguf")
    np = require_module("numpy")
    out = tmp_path / f"tiny-{name}.gguf"
    r = kestrel("quantize", str(SOURCE), str(out), name)
    assert r.returncode == 0, r.stderr
    assert "tensors quantized" in r.stdout
    src, dst = gguf.GGUFReader(str(SOURCE)), gguf.GGUFReader(str(out))
    qtype = gguf.GGMLQuantizationType[name.upper()]
    assert [t.name for t in src.tensors] == [t.name for t in dst.tensors]
    quantized = 0
    for a, b in zip(src.tensors, dst.tensors):
        data = np.array(a.data, dtype=np.float32).reshape(a.data.shape)
        if a.data.ndim == 2 and a.data.shape[-1] % 32 == 0:
            assert b.tensor_type == qtype, a.name
            want = gguf.quants.quantize(data, qtype)
            assert np.array(b.data).tobytes() == want.tobytes(), a.name
            quantized += 1
        else:
            assert b.tensor_type == a.tensor_type and np.array(b.data).tobytes() == np.array(a.data).tobytes(), a.name
    assert quantized >= 10
    keys = [k for k in src.fields if not k.startswith("GGUF.")]
    assert [k for k in dst.fields if not k.startswith("GGUF.")][: len(keys)] == keys
    for k in keys:
        if k != "general.file_type":
            assert field(dst, k) == field(src, k), k
    assert field(dst, "general.file_type") == [FILE_TYPES[name]]
    assert field(dst, "general.quantization_version") == [2]
    run = kestrel("run", "-m", str(out), "--raw", "hello", "-n", "4", "--temp", "0")
    assert run.returncode == 0, run.stderr


def test_bits_group_sym_pick_the_gguf_type(tmp_path):
    require_binary()
    gguf = require_module("gguf")
    for flags, name in [(["--bits", "8", "--group", "32", "--sym"], "Q8_0"), (["--bits", "4"], "Q4_1"),
                        (["--bits", "5", "--sym"], "Q5_0")]:
        out = tmp_path / f"{name}.gguf"
        r = kestrel("quantize", str(SOURCE), str(out), *flags)
        assert r.returncode == 0, r.stderr
        types = {t.tensor_type for t in gguf.GGUFReader(str(out)).tensors}
        assert gguf.GGMLQuantizationType[name] in types, (flags, types)


def test_bad_requests_fail_cleanly_and_leave_nothing(tmp_path):
    require_binary()
    out = tmp_path / "x.gguf"
    assert_clean_error(kestrel("quantize", str(SOURCE), str(out), "--bits", "4", "--group", "128"), "--group 128")
    assert_clean_error(kestrel("quantize", str(SOURCE), str(out), "q4_k"), "q4_k_m")
    assert_clean_error(kestrel("quantize", str(SOURCE), str(out), "q9_9"), "unknown type")
    assert_clean_error(kestrel("quantize", str(SOURCE), str(out)), "give the type")
    assert_clean_error(kestrel("quantize", str(SOURCE), str(SOURCE), "q8_0"), "must not be the input")
    assert_clean_error(kestrel("quantize", str(SOURCE), str(tmp_path / "no" / "x.gguf"), "q8_0"), "cannot create")
    not_gguf = tmp_path / "bad.gguf"
    not_gguf.write_bytes(b"not a gguf at all")
    assert_clean_error(kestrel("quantize", str(not_gguf), str(out), "q8_0"), "GGUF")
    assert list(tmp_path.iterdir()) == [not_gguf]


def write_llama_like(path, gguf, np, layers=8, d=256):
    """A GGUF with llama's tensor names and widths that are whole K-quant super-blocks (the fixtures' 64 are
    not), random f32 weights."""
    rng = np.random.default_rng(7)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(layers)
    w.add_tensor("token_embd.weight", rng.standard_normal((512, d), dtype=np.float32))
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(d, dtype=np.float32))
        for n, shape in [("attn_q", (d, d)), ("attn_v", (d, d)), ("ffn_down", (d, 2 * d)), ("ffn_up", (2 * d, d))]:
            w.add_tensor(f"blk.{i}.{n}.weight", rng.standard_normal(shape, dtype=np.float32) * 0.02)
    w.add_tensor("output.weight", rng.standard_normal((512, d), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("name", sorted(K_FILE_TYPES))
def test_k_quant_mixes_place_q6_k_as_llama_cpp_and_decode_in_the_gguf_package(tmp_path, name):
    require_binary()
    gguf = require_module("gguf")
    np = require_module("numpy")
    src_path, out = tmp_path / "src.gguf", tmp_path / f"{name}.gguf"
    write_llama_like(src_path, gguf, np)
    r = kestrel("quantize", str(src_path), str(out), name)
    assert r.returncode == 0, r.stderr
    src, dst = gguf.GGUFReader(str(src_path)), gguf.GGUFReader(str(out))
    base = {"q2_k": "Q2_K", "q3_k": "Q3_K", "q4_k_m": "Q4_K", "q5_k_m": "Q5_K", "q6_k": "Q6_K"}[name]
    # llama.cpp's rule for 8 layers in the *_M mixes: Q6_K for attn_v / ffn_down in layers 0, 3, 6, 7; the
    # output in Q6_K everywhere.
    more_bits = {0, 3, 6, 7} if name.endswith("_m") else set()
    bounds = {"Q2_K": 0.11, "Q3_K": 0.035, "Q4_K": 0.01, "Q5_K": 0.0025, "Q6_K": 0.0006}
    for a, b in zip(src.tensors, dst.tensors):
        if a.data.ndim == 1:
            assert b.tensor_type == a.tensor_type, a.name
            continue
        want = base
        if a.name == "output.weight" or (
                a.name.endswith(("attn_v.weight", "ffn_down.weight")) and int(a.name.split(".")[1]) in more_bits):
            want = "Q6_K"
        assert b.tensor_type == gguf.GGMLQuantizationType[want], (a.name, b.tensor_type)
        x = np.array(a.data, dtype=np.float32).reshape(a.data.shape)
        y = gguf.quants.dequantize(np.array(b.data), b.tensor_type).reshape(x.shape)
        nmse = float(((y - x) ** 2).sum() / (x ** 2).sum())
        assert nmse < bounds[want], (a.name, want, nmse)
    assert field(dst, "general.file_type") == [K_FILE_TYPES[name]]


# --- Hugging Face float models to GPTQ checkpoints (--method rtn|gptq|awq) ---

TINY_HF = FIXTURES / "models" / "tiny-llama"
HAMLET = FIXTURES / "text" / "hamlet_act1_2.txt"
ST_DTYPES = {"F32": "<f4", "F16": "<f2", "I32": "<i4", "BF16": "<u2"}


def read_safetensors(path, np):
    import json
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name != "__metadata__":
            begin, end = info["data_offsets"]
            out[name] = np.frombuffer(data[8 + n + begin:8 + n + end], dtype=ST_DTYPES[info["dtype"]]).reshape(
                info["shape"])
    return out


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    """Calibration and evaluation text apart: the first and the second half of the fixture play."""
    d = tmp_path_factory.mktemp("texts")
    text = HAMLET.read_text()
    (d / "calib.txt").write_text(text[: len(text) // 2])
    (d / "eval.txt").write_text(text[len(text) // 2:])
    return d / "calib.txt", d / "eval.txt"


def unpack_columns(words, bits, np):
    """GPTQ's qweight [K*b/32, N] (or qzeros transposed): each column a little-endian bit stream of b-bit codes."""
    bitstream = np.unpackbits(words.astype("<u4").view(np.uint8).reshape(words.shape[0], words.shape[1], 4)
                              .transpose(1, 0, 2).reshape(words.shape[1], -1), axis=1, bitorder="little")
    codes = bitstream.reshape(words.shape[1], -1, bits)
    return (codes * (1 << np.arange(bits))).sum(axis=2)  # [N, K]


@pytest.mark.parametrize("method,flags", [("rtn", ["--bits", "4", "--group", "32"]),
                                          ("gptq", ["--bits", "3", "--group", "64", "--act-order"]),
                                          ("awq", ["--bits", "4", "--group", "32"]),
                                          ("rtn", ["--bits", "8", "--group", "-1", "--sym"])])
def test_hf_model_becomes_a_gptq_checkpoint_that_loads_and_runs(tmp_path, texts, method, flags):
    require_binary()
    np = require_module("numpy")
    import json
    calib, evaluation = texts
    out = tmp_path / "out"
    extra = ["--calib", str(calib), "--calib-tokens", "1024", "--calib-ctx", "128"] if method != "rtn" else []
    r = kestrel("quantize", "--method", method, *flags, *extra, "-m", str(TINY_HF), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert f"14 linears quantized by {method}" in r.stdout, r.stdout
    bits, group = int(flags[1]), int(flags[3])
    q = json.loads((out / "config.json").read_text())["quantization_config"]
    assert q["quant_method"] == "gptq" and q["bits"] == bits and q["group_size"] == group
    assert q["checkpoint_format"] == "gptq_v2" and q["desc_act"] == ("--act-order" in flags)
    assert q["sym"] == ("--sym" in flags) and q["meta"]["method"] == method
    for f in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]:
        assert (out / f).read_bytes() == (TINY_HF / f).read_bytes(), f
    src, dst = read_safetensors(TINY_HF / "model.safetensors", np), read_safetensors(out / "model.safetensors", np)
    prefix = "model.layers.0.self_attn.q_proj"
    assert prefix + ".weight" not in dst
    K, N = src[prefix + ".weight"].shape[1], src[prefix + ".weight"].shape[0]
    G = 1 if group < 0 else K // group
    assert dst[prefix + ".qweight"].shape == (K * bits // 32, N) and dst[prefix + ".qweight"].dtype == np.int32
    assert dst[prefix + ".qzeros"].shape == (G, (N * bits + 31) // 32) and dst[prefix + ".scales"].shape == (G, N)
    assert dst[prefix + ".g_idx"].shape == (K,)
    # Untouched tensors keep their bytes; AWQ rewrites only the norms it folded its scales into.
    for name, t in src.items():
        if name.endswith("_proj.weight") and name.startswith("model.layers."):
            continue
        if method == "awq" and name.endswith("layernorm.weight"):  # AWQ's scales folded in, written f32
            assert dst[name].dtype == np.float32 and dst[name].shape == t.shape, name
            continue
        assert dst[name].tobytes() == t.tobytes(), name
    if method == "rtn":
        # Decoded independently of Kestrel's loader: every weight within one step (half a step inside the grid;
        # at its ends the integer zero point and the f16 scale can shift the grid by up to half a step more).
        w = src[prefix + ".weight"].astype(np.float64)
        codes = unpack_columns(dst[prefix + ".qweight"], bits, np)
        zeros = unpack_columns(dst[prefix + ".qzeros"].T.copy(), bits, np)[:, :N]  # [G, N]: rows along N
        scales = dst[prefix + ".scales"].astype(np.float64)
        g = dst[prefix + ".g_idx"]
        deq = (codes - zeros[g].T) * scales[g].T
        err = np.abs(deq - w) / scales[g].T
        assert err.max() <= 1.0 and np.median(err) <= 0.3, (err.max(), np.median(err))
    r = kestrel("info", "-m", str(out))
    assert r.returncode == 0 and f"GPTQ {bits}-bit" in r.stdout, r.stderr
    r = kestrel("perplexity", "-m", str(out), str(evaluation), "-c", "64", "--chunks", "2")
    assert r.returncode == 0 and "Final estimate: PPL" in r.stdout, r.stderr


def test_hf_quantize_bad_requests_explain_themselves(tmp_path, texts):
    require_binary()
    calib, _ = texts
    out = str(tmp_path / "out")
    m = ["-m", str(TINY_HF), "-o", out]
    assert_clean_error(kestrel("quantize", "--method", "gptq", *m), "--method gptq needs --calib")
    assert_clean_error(kestrel("quantize", "--method", "awq", "--act-order", "--calib", str(calib), *m),
                       "--act-order is GPTQ's")
    assert_clean_error(kestrel("quantize", "--method", "rtn", "--act-order", *m), "--act-order is GPTQ's")
    assert_clean_error(kestrel("quantize", "--method", "rtn", "--calib", str(calib), *m), "takes no --calib")
    assert_clean_error(kestrel("quantize", "--kv", "skvq", "--method", "gptq", "--calib", str(calib), *m), "--kv")
    assert_clean_error(kestrel("quantize", "--method", "gptq", "--bits", "3", "--calib", str(calib), "-m", str(SOURCE),
                               "-o", out), "no GGUF type holds those codes")
    assert_clean_error(kestrel("quantize", "--method", "gptq", "--act-order", "--calib", str(calib), "-m",
                               str(SOURCE), "-o", out), "without --act-order")
    assert_clean_error(kestrel("quantize", str(SOURCE), out, "q4_0", "--method", "awq", "--calib", str(calib)),
                       "drop the type")
    assert_clean_error(kestrel("quantize", "--method", "rtn", "--bits", "5", *m), "--bits 5")
    assert_clean_error(kestrel("quantize", "--method", "rtn", "--group", "48", *m), "group 48 does not divide")
    assert_clean_error(kestrel("quantize", "--method", "rtn", "-m", str(TINY_HF)), "output directory")
    quantized = FIXTURES / "models" / "quant" / "tiny-llama-gptq-w4g32"
    assert_clean_error(kestrel("quantize", "--method", "rtn", "-m", str(quantized), "-o", out), "already quantized")
    assert_clean_error(kestrel("quantize", "--method", "rtn", "-m", str(TINY_HF), "-o", str(TINY_HF)),
                       "must not be the input")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method,flags,qtype", [("gptq", ["--bits", "4"], "Q4_1"),
                                                ("gptq", ["--bits", "4", "--sym"], "Q4_0"),
                                                ("gptq", ["--bits", "8", "--sym"], "Q8_0"),
                                                ("awq", ["--bits", "4"], "Q4_1")])
def test_gguf_model_gptq_awq_codes_become_ggml_blocks(tmp_path, texts, method, flags, qtype):
    """A float GGUF through GPTQ or AWQ comes out as the ggml blocks that hold the codes, decoded here by the
    gguf package: close to the float weights (GPTQ), every other tensor as it was (AWQ: but the norms its scales
    were folded into), the method in the metadata, and the file runs."""
    require_binary()
    gguf = require_module("gguf")
    np = require_module("numpy")
    calib, evaluation = texts
    out = tmp_path / "out.gguf"
    r = kestrel("quantize", "--method", method, *flags, "--calib", str(calib), "--calib-tokens", "1024",
                "--calib-ctx", "128", "-m", str(SOURCE), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert f"14 linears quantized by {method} to {qtype.lower()}" in r.stdout, r.stdout
    src, dst = gguf.GGUFReader(str(SOURCE)), gguf.GGUFReader(str(out))
    t = gguf.GGMLQuantizationType[qtype]
    assert [a.name for a in src.tensors] == [b.name for b in dst.tensors]
    linears = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    quantized = folded = 0
    for a, b in zip(src.tensors, dst.tensors):
        if a.name.startswith("blk.") and a.name.split(".")[2] in linears:
            assert b.tensor_type == t, a.name
            quantized += 1
            if method == "awq":  # its scales are in these weights (and undone by the folded norms)
                continue
            w = np.array(a.data, dtype=np.float64).reshape(a.data.shape)
            v = gguf.quants.dequantize(b.data, t).reshape(w.shape).astype(np.float64)
            rel = np.linalg.norm(v - w) / np.linalg.norm(w)
            assert rel < (0.01 if qtype == "Q8_0" else 0.15), (a.name, rel)
        elif method == "awq" and a.name.endswith("norm.weight") and a.name.startswith("blk."):
            assert b.tensor_type == gguf.GGMLQuantizationType.F32 and b.data.shape == a.data.shape, a.name
            assert np.array(b.data).tobytes() != np.array(a.data).tobytes(), a.name
            folded += 1
        else:
            assert b.tensor_type == a.tensor_type and np.array(b.data).tobytes() == np.array(a.data).tobytes(), a.name
    assert quantized == 14 and folded == (4 if method == "awq" else 0)
    assert bytes(field(dst, "kestrel.quantize.method")).decode() == method
    assert field(dst, "general.file_type") == [FILE_TYPES[qtype.lower()]]
    r = kestrel("perplexity", "-m", str(out), str(evaluation), "-c", "64", "--chunks", "2")
    assert r.returncode == 0 and "Final estimate: PPL" in r.stdout, r.stderr


def test_w8a8_at_load_stays_close_to_the_float_model(tmp_path):
    """--quantization int8|fp8 (W8A8: per-channel weight scales, per-token activation scales) on the tiny float
    model: its 14 block linears converted, the output projection kept; the log-probabilities stay close to the
    float model's (int8's 7 bits of mantissa-equivalent keep it much closer than e4m3's 3)."""
    require_binary()
    text = FIXTURES / "text" / "hamlet_act1_2.txt"
    ref = tmp_path / "ref.f16"
    r = kestrel("perplexity", "-m", str(TINY_HF), str(text), "-c", "64", "--chunks", "8", "--save-logits", str(ref))
    assert r.returncode == 0, r.stderr
    for q, max_kld, min_top1 in [("int8", 0.02, 85.0), ("fp8", 0.2, 60.0)]:
        r = kestrel("perplexity", "-m", str(TINY_HF), str(text), "-c", "64", "--chunks", "8", "--quantization", q,
                    "--kl-reference", str(ref), "-v")
        assert r.returncode == 0, r.stderr
        assert f"--quantization {q}: 14 linears converted to W8A8" in r.stderr, r.stderr
        kld = float(r.stdout.split("KL divergence")[1].split("mean")[1].split(",")[0])
        top1 = float(r.stdout.split("same top-1")[1].split("%")[0])
        assert kld < max_kld and top1 > min_top1, (q, kld, top1)
    r = kestrel("perplexity", "-m", str(TINY_HF), str(text), "--quantization", "int4")
    assert r.returncode != 0 and "--quantization" in r.stderr and "fp8" in r.stderr, r.stderr
