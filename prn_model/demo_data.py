"""A small offline DEMO dataset in MVTec layout, built from a public-domain texture.

This is not a benchmark: it exists so that the pipeline can be run end to end without
downloading anything. Normal images are random crops of ``skimage.data.gravel()`` (CC0) with
mild brightness jitter; train and test crops come from disjoint rows of the texture so test
normals are unseen. Test defects are drawn with generators the anomaly-synthesis training mix
does not use (thin polylines, soft ellipses, random-walk cracks), so a model cannot score well
merely by recognising its own training corruptions. Masks are the painted regions, and no
pixel outside a mask is changed.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import skimage
from skimage import data as skimage_data

CATEGORY = "demo_texture"
MARKER = ".demo_complete.json"
MIN_SIZE, MAX_SIZE = 32, 224
_TEST_MARGIN = 64  # extra rows in the test region so test crops vary
_MIN_ALPHA = 0.1  # blend weights below this are dropped, so no pixel outside a mask changes


def _crop(texture: np.ndarray, rows: tuple[int, int], size: int, rng: np.random.Generator):
    """Random crop from ``rows`` of the texture, rotated/flipped, with brightness jitter."""
    top = int(rng.integers(rows[0], rows[1] - size + 1))
    left = int(rng.integers(0, texture.shape[1] - size + 1))
    patch = np.rot90(texture[top : top + size, left : left + size], k=int(rng.integers(4)))
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    return np.clip(patch * rng.uniform(0.92, 1.08) + rng.uniform(-0.03, 0.03), 0.0, 1.0)


def _extreme_shade(rng: np.random.Generator) -> float:
    return rng.uniform(0.02, 0.15) if rng.random() < 0.5 else rng.uniform(0.85, 0.97)


def _polyline_layer(points: np.ndarray, size: int, thickness: int) -> np.ndarray:
    layer = np.zeros((size, size), np.uint8)
    pts = np.clip(np.rint(points), 0, size - 1).astype(np.int32)
    cv2.polylines(layer, [pts], isClosed=False, color=255, thickness=thickness)
    return layer > 0


def _scratch(size: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Thin dark or bright polyline of 2-4 gently bending segments."""
    angle = rng.uniform(0.0, 2 * math.pi)
    points = [rng.uniform(0.2, 0.8, 2) * size]
    for _ in range(int(rng.integers(2, 5))):
        angle += rng.normal(0.0, 0.4)
        step = size * rng.uniform(0.1, 0.22)
        points.append(points[-1] + step * np.array([math.cos(angle), math.sin(angle)]))
    stroke = _polyline_layer(np.array(points), size, thickness=int(rng.integers(1, 3)))
    return stroke * rng.uniform(0.75, 0.95), _extreme_shade(rng)


def _spot(size: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Filled dark or bright ellipse whose edge fades out inside the ellipse."""
    axes = np.maximum(rng.uniform(0.04, 0.1, 2) * size, 2.0)
    center = rng.uniform(0.2, 0.8, 2) * size
    layer = np.zeros((size, size), np.float32)
    cv2.ellipse(
        layer,
        (int(center[0]), int(center[1])),
        (int(axes[0]), int(axes[1])),
        rng.uniform(0.0, 180.0),
        0,
        360,
        1.0,
        thickness=-1,
    )
    soft = cv2.GaussianBlur(layer, (0, 0), sigmaX=max(float(axes.min()) / 3.0, 1.0))
    return np.clip(2.0 * soft - 1.0, 0.0, 1.0) * rng.uniform(0.8, 1.0), _extreme_shade(rng)


def _crack(size: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Dark random-walk line: many short steps with a drifting direction."""
    n_steps = int(size * rng.uniform(0.2, 0.45) / 2)
    angles = rng.uniform(0.0, 2 * math.pi) + np.cumsum(rng.normal(0.0, 0.35, n_steps))
    steps = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    points = rng.uniform(0.25, 0.75, 2) * size + np.cumsum(steps, axis=0)
    stroke = _polyline_layer(points, size, thickness=int(rng.integers(1, 3)))
    return stroke * rng.uniform(0.85, 1.0), rng.uniform(0.0, 0.1)


DEFECTS: dict[str, Callable[[int, np.random.Generator], tuple[np.ndarray, float]]] = {
    "crack": _crack,
    "scratch": _scratch,
    "spot": _spot,
}


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def _write(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), pixels):
        raise OSError(f"could not write {path}")


def _build(folder: Path, params: dict[str, int]) -> None:
    size, rng = params["size"], np.random.default_rng(params["seed"])
    texture = skimage_data.gravel().astype(np.float32) / 255.0
    test_rows = (texture.shape[0] - size - _TEST_MARGIN, texture.shape[0])
    train_rows = (0, test_rows[0])
    for i in range(params["n_train"]):
        _write(
            folder / "train/good" / f"{i:03d}.png", _to_uint8(_crop(texture, train_rows, size, rng))
        )
    for i in range(params["n_test_good"]):
        _write(
            folder / "test/good" / f"{i:03d}.png", _to_uint8(_crop(texture, test_rows, size, rng))
        )
    for defect, draw in DEFECTS.items():
        for i in range(params["n_test_defect"]):
            clean = _to_uint8(_crop(texture, test_rows, size, rng))
            alpha, shade = draw(size, rng)
            alpha = np.where(alpha >= _MIN_ALPHA, alpha, 0.0)
            image = _to_uint8(clean / 255.0 * (1.0 - alpha) + shade * alpha)
            _write(folder / "test" / defect / f"{i:03d}.png", image)
            mask = np.where(alpha > 0, 255, 0).astype(np.uint8)
            _write(folder / "ground_truth" / defect / f"{i:03d}_mask.png", mask)


def generator_fingerprint() -> str:
    """A hash of this module's source and of the libraries that draw the images (the
    texture, the random streams, the painting), which the cache marker records: the same
    arguments give other files once any of them changes, so an old build must not be reused."""
    libraries = f"numpy {np.__version__} OpenCV {cv2.__version__} skimage {skimage.__version__}"
    source = Path(__file__).read_bytes() + libraries.encode()
    return hashlib.sha256(source).hexdigest()[:16]


def build_demo_dataset(
    root: str | Path,
    n_train: int = 60,
    n_test_good: int = 20,
    n_test_defect: int = 20,
    size: int = 128,
    seed: int = 0,
) -> Path:
    """Write ``root/demo_texture`` in MVTec layout and return ``root``.

    ``n_test_defect`` images are made for each defect type (crack, scratch, spot). The same
    arguments always give the same files; an existing complete build with the same arguments
    and the same generator (``generator_fingerprint``) is reused, and a build is written to a
    temporary folder and renamed into place, so an interrupted run never leaves a half-built
    dataset behind.
    """
    params = {
        "n_train": n_train,
        "n_test_good": n_test_good,
        "n_test_defect": n_test_defect,
        "size": size,
        "seed": seed,
    }
    for name, value in params.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r}")
        if name.startswith("n_") and value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be in [{MIN_SIZE}, {MAX_SIZE}], got {size}")

    root = Path(root)
    target = root / CATEGORY
    marker = target / MARKER
    built = {**params, "generator": generator_fingerprint()}
    if marker.is_file() and json.loads(marker.read_text()) == built:
        return root
    if target.exists() and not marker.is_file():
        raise FileExistsError(f"{target} exists but is not a demo build; remove it first")
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=root, prefix=f".{CATEGORY}-"))
    try:
        _build(scratch, params)
        (scratch / MARKER).write_text(json.dumps(built))
        if target.exists():  # an older demo build with other arguments or another generator
            shutil.rmtree(target)
        scratch.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return root
