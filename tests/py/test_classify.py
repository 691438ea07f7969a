"""`kestrel classify` on the committed sentiment classifier (tests/fixtures/classifier/), and the synthetic
image/label rules of scripts/train/sentiment/ (numpy only: no torch in CI)."""
import json
import pathlib
import subprocess
import sys

import numpy as np

from conftest import cache_dir, require_binary, skip_or_fail

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "classifier"
sys.path.insert(0, str(ROOT / "scripts" / "train" / "sentiment"))
import make_data  # noqa: E402
import synth_images  # noqa: E402


def kestrel(*args):
    return subprocess.run([str(require_binary()), *args], capture_output=True, text=True, timeout=300)


def minilm():
    d = cache_dir() / "models" / "all-MiniLM-L6-v2"
    if not (d / "model.safetensors").exists():
        skip_or_fail(f"{d}/model.safetensors missing; run scripts/fetch_test_vocabs.sh")
    return d


def test_classify_prints_the_reference_labels_as_json():
    golden = json.loads((FIXTURE / "golden" / "golden.json").read_text(encoding="utf-8"))
    args = ["classify", "-m", str(FIXTURE / "model"), "--encoder", str(minilm())]
    for text, image in zip(golden["texts"][:3], golden["images"][:3]):
        args += ["--text", text, "--image", str(FIXTURE / "golden" / image)]
    r = kestrel(*args)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["classes"] == ["negative", "neutral", "positive"]
    for res, want in zip(out["results"], golden["logits"]):
        probs = res["probabilities"]
        assert abs(sum(probs.values()) - 1) < 1e-9
        assert res["label"] == out["classes"][int(np.argmax(want))]
        assert np.allclose(res["logits"], want, atol=2e-3)


def test_classify_errors_are_one_clear_line(tmp_path):
    minilm_dir = str(minilm())
    model = str(FIXTURE / "model")

    def error(fragment, *args):
        r = kestrel("classify", "-m", model, "--encoder", minilm_dir, *args)
        assert r.returncode == 1 and "error:" in r.stderr and fragment in r.stderr, r.stderr
        assert "Sanitizer" not in r.stderr and "terminate" not in r.stderr

    image = str(FIXTURE / "golden" / "image_0.ppm")
    error("pairs", "--text", "a", "--text", "b", "--image", image)
    (tmp_path / "bad.ppm").write_bytes(b"P6\n32 32\n255\n\x00")
    error("truncated", "--text", "a", "--image", str(tmp_path / "bad.ppm"))
    (tmp_path / "small.ppm").write_bytes(b"P6\n2 2\n255\n" + bytes(12))
    error("32x32", "--text", "a", "--image", str(tmp_path / "small.ppm"))
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    error("not a PPM/PGM", "--text", "a", "--image", str(tmp_path / "x.png"))
    r = kestrel("classify", "-m", str(tmp_path), "--text", "a", "--image", image)
    assert r.returncode == 1 and "no config.json" in r.stderr, r.stderr


def test_pair_label_is_the_sign_of_both_sentiments():
    # rows: text negative / neutral / positive; columns: image negative / neutral / positive
    table = [[make_data.fuse(t, i) for i in range(3)] for t in range(3)]
    assert table == [[0, 0, 1], [0, 1, 2], [1, 2, 2]]
    assert [make_data.text_label(s) for s in (-1.0, -0.99, 0.0, 0.99, 1.0)] == [0, 1, 1, 1, 2]


def test_synthetic_images_are_seeded_per_index_and_round_trip_as_ppm(tmp_path):
    a = synth_images.render_set(7, np.array([-1, 0, 1]))
    b = synth_images.render_set(7, np.array([-1, 0]))
    assert a.shape == (3, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a[:2], b)  # an image does not depend on how many are rendered
    assert not np.array_equal(a[0], a[1])
    synth_images.write_ppm(tmp_path / "x.ppm", a[2])
    assert np.array_equal(synth_images.read_ppm(tmp_path / "x.ppm"), a[2])
