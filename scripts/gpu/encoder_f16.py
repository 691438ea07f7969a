#!/usr/bin/env python3
"""Copies an encoder directory (config.json, model.safetensors, tokenizer and sentence-transformers files)
with its F32 tensors rounded to F16, so that all-MiniLM-L6-v2 (91 MB) fits the 64 MiB a GPU-machine call
carries. Both sides of the GPU comparison (Kestrel and sentence-transformers, which loads F16 tensors into its
F32 model) then read the same rounded weights.

With --keep-texts, word-embedding rows of tokens none of the texts (a JSON file with a "texts" list, e.g.
tests/fixtures/encoder/minilm_golden.json) use are zeroed, so the file compresses to about half (xz): those
rows are never read when embedding those texts, so neither side's results change.

Usage: encoder_f16.py SRC_DIR DST_DIR [--keep-texts JSON]   (numpy; --keep-texts also needs `tokenizers`)
"""
import json
import os
import shutil
import struct
import sys

import numpy as np


def used_tokens(src, texts_json):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(src, "tokenizer.json"))
    tok.no_truncation()
    ids = set(tok.token_to_id(t) for t in ["[CLS]", "[SEP]", "[PAD]", "[UNK]"] if tok.token_to_id(t) is not None)
    for text in json.load(open(texts_json))["texts"]:
        ids.update(tok.encode(text).ids)
    return sorted(ids)


def main():
    args = sys.argv[1:]
    keep = None
    if "--keep-texts" in args:
        i = args.index("--keep-texts")
        keep = args[i + 1]
        del args[i : i + 2]
    src, dst = args[0], args[1]
    keep_ids = used_tokens(src, keep) if keep else None
    os.makedirs(dst, exist_ok=True)
    for root, _, files in os.walk(src):
        rel = os.path.relpath(root, src)
        os.makedirs(os.path.join(dst, rel), exist_ok=True)
        for f in files:
            if f != "model.safetensors":
                shutil.copy(os.path.join(root, f), os.path.join(dst, rel, f))
    with open(os.path.join(src, "model.safetensors"), "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(n))
        blob = fh.read()
    out_header, chunks, offset = {}, [], 0
    for name, info in header.items():
        if name == "__metadata__":
            out_header[name] = info
            continue
        begin, end = info["data_offsets"]
        raw = blob[begin:end]
        dtype = info["dtype"]
        if dtype == "F32":
            values = np.frombuffer(raw, dtype="<f4").astype("<f2")
            if keep_ids is not None and name.endswith("embeddings.word_embeddings.weight"):
                rows = values.reshape(info["shape"])
                kept = np.zeros_like(rows)
                kept[keep_ids] = rows[keep_ids]
                values = kept
                print(f"{name}: kept {len(keep_ids)} of {rows.shape[0]} rows")
            raw = values.tobytes()
            dtype = "F16"
        out_header[name] = {"dtype": dtype, "shape": info["shape"], "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    head = json.dumps(out_header).encode()
    head += b" " * (-len(head) % 8)
    with open(os.path.join(dst, "model.safetensors"), "wb") as fh:
        fh.write(struct.pack("<Q", len(head)))
        fh.write(head)
        for c in chunks:
            fh.write(c)


if __name__ == "__main__":
    main()
