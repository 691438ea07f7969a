#!/usr/bin/env python3
"""Diff two `kestrel bench --json` files (or bench/results files that hold one under "kestrel" or "result"): one row
per (test, batch) with both values and the ratio.
  bench/compare.py OLD.json NEW.json [--metric tok_s]
"""
import argparse
import json


def rows(path):
    with open(path) as f:
        data = json.load(f)
    # bench/results files wrap the bench output with card/commit/date/command (and the peer's numbers).
    for key in ("kestrel", "result"):
        if isinstance(data, dict) and "results" not in data and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or "results" not in data:
        raise SystemExit(f"error: {path} is neither `kestrel bench --json` output nor a bench/results file holding one")
    return data, {(r["test"], r.get("batch", 1)): r for r in data["results"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--metric", default="tok_s")
    a = ap.parse_args()
    old_meta, old = rows(a.old)
    new_meta, new = rows(a.new)
    for key in ("device", "backend", "model", "copy_gbps"):
        if old_meta.get(key) != new_meta.get(key):
            print(f"note: {key} differs: {old_meta.get(key)} -> {new_meta.get(key)}")
    print(f"| test | batch | old {a.metric} | new {a.metric} | new/old |")
    print("|---|---|---|---|---|")
    for key in sorted(set(old) | set(new), key=lambda k: (k[0][:2], int(k[0][2:]) if k[0][2:].isdigit() else 0, k[1])):
        o, n = old.get(key, {}).get(a.metric), new.get(key, {}).get(a.metric)
        ratio = f"{n / o:.3f}" if o and n else "-"
        fmt = lambda v: "-" if v is None else f"{v:.2f}"
        print(f"| {key[0]} | {key[1]} | {fmt(o)} | {fmt(n)} | {ratio} |")


if __name__ == "__main__":
    main()
