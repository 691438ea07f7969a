#!/usr/bin/env python3
"""Writes Jane Austen's novels (public domain) as plain text for long-context perplexity runs: the six
novels of Debian's r-cran-janeaustenr package, read from its R lazy-load database (data/Rdata.rdb: blobs of a
4-byte big-endian length and a zlib stream, each an R serialisation (XDR, version 3) of a character vector,
one element per printed line) without R. Lines are joined as printed; blank lines separate paragraphs.
Usage: python3 scripts/reference/make_austen_text.py [--out PATH] [--novels N] [--skip N]
  (default out: $KESTREL_CACHE/austen.txt, ~/.cache/kestrel when unset; N: how many novels, in the
  database's order: Emma, Mansfield Park, Northanger Abbey, Persuasion, Pride and Prejudice, Sense and
  Sensibility; 4,025,038 characters for all six from janeaustenr 1.0.0-1; --skip 1 leaves Emma out, as the
  training text of scripts/train/ does)
"""
import argparse
import pathlib
import struct
import subprocess
import tempfile
import zlib

from reference_paths import CACHE

RDB = "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"
STRSXP, CHARSXP = 16, 9


def strings(blob: bytes) -> list[str]:
    """The elements of a serialised character vector."""
    assert blob[:2] == b"X\n", "not an XDR serialisation"
    pos = 2 + 12  # format, writer version, minimum reader version
    (n_enc,) = struct.unpack(">i", blob[pos:pos + 4])
    pos += 4 + n_enc  # native encoding name (version 3)
    flags, length = struct.unpack(">ii", blob[pos:pos + 8])
    pos += 8
    assert flags & 0xFF == STRSXP, f"not a character vector (type {flags & 0xFF})"
    out = []
    for _ in range(length):
        flags, n = struct.unpack(">ii", blob[pos:pos + 8])
        pos += 8
        assert flags & 0xFF == CHARSXP
        if n < 0:  # NA
            out.append("")
            continue
        out.append(blob[pos:pos + n].decode("utf-8"))
        pos += n
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=pathlib.Path, default=CACHE / "austen.txt")
    ap.add_argument("--novels", type=int, default=6)
    ap.add_argument("--skip", type=int, default=0, help="leave out the first N novels")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", "-q", "r-cran-janeaustenr"], cwd=tmp, check=True,
                       stderr=subprocess.DEVNULL)
        deb = next(pathlib.Path(tmp).glob("r-cran-janeaustenr_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), tmp + "/x"], check=True)
        data = (pathlib.Path(tmp) / "x" / RDB).read_bytes()
    novels, pos = [], 0
    while pos < len(data):
        dec = zlib.decompressobj()
        blob = dec.decompress(data[pos + 4:])
        novels.append("\n".join(strings(blob)).strip())
        pos = len(data) - len(dec.unused_data)
    chosen = novels[args.skip:args.skip + args.novels]
    text = "\n\n\n".join(chosen) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}: {len(chosen)} novels, {len(text)} characters")


if __name__ == "__main__":
    main()
