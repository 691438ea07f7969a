"""What the reference scripts share: where the repository and the model cache are, and file hashes."""
import hashlib
import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]
CACHE = pathlib.Path(os.environ.get("KESTREL_CACHE", pathlib.Path.home() / ".cache/kestrel"))
BUILD = CACHE / "llama.cpp-build"  # scripts/reference/build_llama_cpp.sh


def sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
