"""Seeded synthetic images for the multimodal sentiment set (numpy only). SYNTHETIC: no real paired
image-text sentiment set installs offline, so each text is paired with a rendered 32x32 RGB face whose
expression carries a sentiment of its own, drawn independently of the text:

  expression -1: a frowning mouth, 0: a straight mouth, +1: a smiling mouth.

The pair's label (make_data.py) is sign(text sentiment + image sentiment): agreeing modalities keep
their sentiment, a neutral one defers to the other, opposite ones cancel to neutral. Neither modality
alone decides the label, so text-only and image-only models are measurably worse than a fused one.
The faces vary in position, size, colours, mouth width and curvature, with pixel noise and a distractor
square, so the image branch has to learn the mouth's shape rather than a fixed pixel.

Images are uint8 [H, W, 3] (row-major, RGB), written as binary PPM (P6) for `kestrel classify --image`.
"""
from __future__ import annotations

import pathlib

import numpy as np

SIZE = 32


def _contrasting_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background, face and feature (eyes, mouth) colours, each pair far enough apart to see."""
    while True:
        bg, face, ink = (rng.uniform(0, 255, 3) for _ in range(3))
        if (np.abs(bg - face).sum() > 180 and np.abs(face - ink).sum() > 220):
            return bg, face, ink


def render_face(rng: np.random.Generator, expression: int, size: int = SIZE) -> np.ndarray:
    """One face with the given expression (-1 frown, 0 straight, +1 smile), as uint8 [size, size, 3]."""
    bg, face, ink = _contrasting_colours(rng)
    img = np.empty((size, size, 3), np.float64)
    img[:] = bg
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)

    # A distractor square of random colour somewhere (possibly under the face).
    s = int(rng.integers(3, 8))
    y0, x0 = (int(v) for v in rng.integers(0, size - s, 2))
    img[y0:y0 + s, x0:x0 + s] = rng.uniform(0, 255, 3)

    r = rng.uniform(0.26, 0.36) * size
    cy, cx = (rng.uniform(r + 1, size - r - 1) for _ in range(2))
    img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = face

    eye_dx, eye_y, eye_r = r * rng.uniform(0.3, 0.45), cy - r * rng.uniform(0.25, 0.4), max(1.0, r * 0.14)
    for ex in (cx - eye_dx, cx + eye_dx):
        img[(yy - eye_y) ** 2 + (xx - ex) ** 2 <= eye_r * eye_r] = ink

    # Mouth: y = my - k * (1 - (t / half)^2) sampled densely; image rows grow downward, so a smile
    # (corners up) has its middle lower than its corners.
    half = r * rng.uniform(0.4, 0.6)
    my = cy + r * rng.uniform(0.3, 0.45)
    bend = expression * r * rng.uniform(0.2, 0.32)
    thick = rng.uniform(0.6, 1.0)
    for t in np.linspace(-half, half, 64):
        py = my + bend * (1 - (t / half) ** 2) - bend * 0.5
        img[(yy - py) ** 2 + (xx - (cx + t)) ** 2 <= thick * thick] = ink

    img += rng.normal(0, rng.uniform(4, 14), img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_set(seed: int, expressions: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Images for a list of expressions: image i comes from its own generator seeded (seed, i), so one
    image does not depend on the others or on the order they are rendered in."""
    out = np.empty((len(expressions), size, size, 3), np.uint8)
    for i, e in enumerate(expressions):
        out[i] = render_face(np.random.default_rng([seed, i]), int(e), size)
    return out


def write_ppm(path: pathlib.Path, img: np.ndarray) -> None:
    h, w, _ = img.shape
    path.write_bytes(b"P6\n%d %d\n255\n" % (w, h) + np.ascontiguousarray(img, np.uint8).tobytes())


def read_ppm(path: pathlib.Path) -> np.ndarray:
    """Reads the binary PPM write_ppm writes (no comments)."""
    data = path.read_bytes()
    parts = data.split(maxsplit=4)
    if parts[0] != b"P6" or int(parts[3]) != 255:
        raise ValueError(f"{path}: not an 8-bit binary PPM")
    w, h = int(parts[1]), int(parts[2])
    return np.frombuffer(parts[4][: w * h * 3], np.uint8).reshape(h, w, 3)
