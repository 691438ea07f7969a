"""bench/results and BENCHMARKS.md stay linked (issue 11): every raw JSON names its card, commit, date and
command, and every bench/results file that BENCHMARKS.md names exists."""
import itertools
import json
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "BENCHMARKS.md"
KEYS = ("card", "commit", "date", "command")
JSON_FILES = sorted(RESULTS.glob("*.json"))


def expand_braces(pattern):
    """`a-{x,y}-b{1,2}` -> the four names (no nesting, as BENCHMARKS.md writes them)."""
    parts = re.split(r"\{([^{}]*)\}", pattern)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def named_files(text):
    """bench/results names in the text; `*` globs are kept as globs, `…`/`...` abbreviations are skipped."""
    names = set()
    for m in re.finditer(r"bench/results/([A-Za-z0-9_.*{},-]+)", text):
        name = m.group(1).rstrip(".,")
        if not name:
            continue
        names.update(expand_braces(name))
    return sorted(names)


def test_results_folder_has_json():
    assert JSON_FILES, f"no JSON files in {RESULTS}"


@pytest.mark.parametrize("path", JSON_FILES, ids=lambda p: p.name)
def test_every_raw_json_names_card_commit_date_command(path):
    data = json.loads(path.read_text())
    assert isinstance(data, dict), f"{path.name}: top level is not an object"
    for key in KEYS:
        value = data.get(key)
        assert isinstance(value, str) and value.strip(), f"{path.name}: missing or empty top-level {key!r}"


def test_expand_braces():
    assert expand_braces("x-{a,b}-run{1,2}.json") == ["x-a-run1.json", "x-a-run2.json", "x-b-run1.json",
                                                       "x-b-run2.json"]
    assert named_files("see `bench/results/a-{b,c}.json`, bench/results/d.txt.") == ["a-b.json", "a-c.json",
                                                                                    "d.txt"]


def test_every_file_benchmarks_md_names_exists():
    names = named_files(DOC.read_text())
    assert len(names) >= 10, names  # the parser still finds the references
    missing = [n for n in names if not (list(RESULTS.glob(n)) if "*" in n else (RESULTS / n).is_file())]
    assert not missing, f"BENCHMARKS.md names bench/results files that do not exist: {missing}"


def test_every_abbreviated_name_matches_a_file():
    """`…-h100-cuda-kernels-run4.json` and `...-kv8k-rate-*.json`: some file ends with the written tail."""
    tails = set()
    for m in re.finditer(r"(?:…|\.\.\.)([-/][A-Za-z0-9_.*{},-]+\.(?:json|txt))", DOC.read_text()):
        tails.update(expand_braces(m.group(1).lstrip("/")))
    assert len(tails) >= 5, tails
    missing = [t for t in sorted(tails) if not list(RESULTS.glob("*" + t))]
    assert not missing, f"BENCHMARKS.md abbreviates bench/results names that match no file: {missing}"
