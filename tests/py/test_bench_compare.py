"""bench/compare.py: diffs two bench JSON files, raw or wrapped as in bench/results, and refuses others."""
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMPARE = ROOT / "bench" / "compare.py"


def bench(tok_s_by_batch):
    return {"device": "d", "backend": "cuda", "model": "m", "copy_gbps": 3000.0,
            "results": [{"test": "tg128", "batch": b, "tok_s": v} for b, v in tok_s_by_batch.items()]}


def run(*paths):
    return subprocess.run([sys.executable, str(COMPARE), *map(str, paths)], capture_output=True, text=True)


def test_raw_and_wrapped_files_diff_per_batch(tmp_path):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(bench({1: 100.0, 8: 800.0})))
    new.write_text(json.dumps({"card": "c", "commit": "x", "kestrel": bench({1: 110.0, 32: 3000.0})}))
    r = run(old, new)
    assert r.returncode == 0, r.stderr
    assert "| tg128 | 1 | 100.00 | 110.00 | 1.100 |" in r.stdout
    assert "| tg128 | 8 | 800.00 | - | - |" in r.stdout
    assert "| tg128 | 32 | - | 3000.00 | - |" in r.stdout


def test_other_json_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"runs": []}))
    r = run(bad, bad)
    assert r.returncode != 0 and "error:" in r.stderr and "Traceback" not in r.stderr
