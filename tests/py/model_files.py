"""Small model files for the end-to-end tests: copies of the tiny fixture models with another chat
template, in both formats Kestrel loads (a GGUF file, and a Hugging Face directory whose
tokenizer_config.json carries the template)."""

import json
import shutil
import struct
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY_HF = REPO / "tests" / "fixtures" / "models" / "tiny-llama"
TINY_GGUF = REPO / "tests" / "fixtures" / "models" / "tiny-llama-f32.gguf"

# Three nested loops that each pass jinja2's per-range limit: 10^12 iterations.
HANGING_TEMPLATE = ("{% for a in range(10000) %}{% for b in range(10000) %}{% for c in range(10000) %}"
                    "{% endfor %}{% endfor %}{% endfor %}{{ messages[0]['content'] }}")
# A string that doubles 64 times.
EXPLODING_TEMPLATE = ("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
                      "{% endfor %}{{ ns.s }}")
# Fine on a short probe conversation, quadratic in the length of a message: a long one goes over the budget.
QUADRATIC_TEMPLATE = ("{% for m in messages %}{% for a in m['content'] %}{% for b in m['content'] %}{% endfor %}"
                      "{% endfor %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
                      "{% if add_generation_prompt %}assistant: {% endif %}")


def hf_with_template(dst: Path, template: str) -> Path:
    """A copy of the tiny Llama HF directory whose tokenizer_config.json has `template`."""
    shutil.copytree(TINY_HF, dst)
    cfg_path = dst / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["chat_template"] = template
    cfg_path.write_text(json.dumps(cfg))
    return dst


GGUF_STRING, GGUF_ARRAY = 8, 9
SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def _skip_value(buf: bytes, pos: int, vtype: int) -> int:
    if vtype == GGUF_STRING:
        (n,) = struct.unpack_from("<Q", buf, pos)
        return pos + 8 + n
    if vtype == GGUF_ARRAY:
        sub, n = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        for _ in range(n):
            pos = _skip_value(buf, pos, sub)
        return pos
    return pos + SCALAR_SIZES[vtype]


def _gguf_string(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


def gguf_with_template(dst: Path, template: str, src: Path = TINY_GGUF) -> Path:
    """A copy of a GGUF file whose tokenizer.chat_template is `template` (tensor data unchanged)."""
    buf = src.read_bytes()
    magic, version, n_tensors, n_kv = struct.unpack_from("<4sIQQ", buf, 0)
    assert magic == b"GGUF" and version == 3, (magic, version)
    pos = 24
    kvs, alignment = [], 32
    for _ in range(n_kv):
        start = pos
        (klen,) = struct.unpack_from("<Q", buf, pos)
        key = buf[pos + 8:pos + 8 + klen].decode()
        pos += 8 + klen
        (vtype,) = struct.unpack_from("<I", buf, pos)
        if key == "general.alignment":
            (alignment,) = struct.unpack_from("<I", buf, pos + 4)
        pos = _skip_value(buf, pos + 4, vtype)
        if key != "tokenizer.chat_template":
            kvs.append(buf[start:pos])
    infos_start = pos
    for _ in range(n_tensors):
        (nlen,) = struct.unpack_from("<Q", buf, pos)
        pos += 8 + nlen
        (n_dims,) = struct.unpack_from("<I", buf, pos)
        pos += 4 + 8 * n_dims + 4 + 8
    infos = buf[infos_start:pos]
    data = buf[(pos + alignment - 1) // alignment * alignment:]
    kvs.append(_gguf_string(b"tokenizer.chat_template") + struct.pack("<I", GGUF_STRING) +
               _gguf_string(template.encode()))
    head = struct.pack("<4sIQQ", b"GGUF", 3, n_tensors, len(kvs)) + b"".join(kvs) + infos
    head += b"\0" * ((-len(head)) % alignment)
    dst.write_bytes(head + data)
    return dst
