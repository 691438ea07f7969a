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
