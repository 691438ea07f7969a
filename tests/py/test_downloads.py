"""The downloads the tests depend on are pinned: exact releases, and a recorded sha256 for every file
(scripts/pinned/*.sha256, checked by scripts/verify_sha256.sh in setup)."""
import re
import subprocess

from conftest import REPO, cache_dir, skip_or_fail

PINNED = REPO / "scripts" / "pinned"


def verify(directory, listing):
    script = f'. "{REPO}/scripts/verify_sha256.sh" && verify_sha256 "$1"'
    return subprocess.run(["bash", "-c", script, "verify", str(directory)], input=listing, capture_output=True,
                          text=True)


def test_every_download_names_an_exact_release_and_checks_its_sha256():
    for name in ("setup.sh", "fetch_test_vocabs.sh", "reference/build_llama_cpp.sh"):
        text = (REPO / "scripts" / name).read_text().replace("\\\n", " ")  # one line per shell command
        lines = [l for l in text.splitlines() if "pip download" in l]
        assert lines, name
        for line in lines:
            assert re.search(r'==\$\w+"', line), f"{name}: unpinned download: {line.strip()}"
        assert re.search(r'^\s*verify_sha256 "', text, re.M), f"{name}: downloads without checking a recorded sha256"


def test_a_changed_or_missing_file_fails_with_its_name(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"pinned")
    good = subprocess.run(["sha256sum", "a.bin"], cwd=tmp_path, capture_output=True, text=True).stdout
    assert verify(tmp_path, good).returncode == 0
    (tmp_path / "a.bin").write_bytes(b"changed")
    r = verify(tmp_path, good)
    assert r.returncode == 1 and "do not match their recorded sha256" in r.stderr and "a.bin: FAILED" in r.stderr
    r = verify(tmp_path, good.replace("a.bin", "b.bin"))
    assert r.returncode == 1 and "b.bin" in r.stderr


def test_cached_downloads_are_the_pinned_files():
    for listing, directory in (("default_model.sha256", cache_dir()), ("test_vocabs.sha256", cache_dir() / "vocab")):
        names = [line.split()[1] for line in (PINNED / listing).read_text().splitlines()]
        if not all((directory / n).exists() for n in names):
            skip_or_fail(f"{directory} lacks the files of {listing}; run scripts/setup.sh")
        r = verify(directory, (PINNED / listing).read_text())
        assert r.returncode == 0, r.stderr
