"""Synthesis throughput per anomgen preset at 256x256 RGB, single-threaded.

Prints images/second one image at a time and in batches of 32, with the texture pool
already decoded and resized to 256x256 (as the reference figures for DRAEM and anomalib were
measured; in training every texture is resized once, on its first draw, and kept).
Textures: ../shared/data/dtd when present, else scikit-image's CC0 textures. Real
anomalies for the prn preset: the first 10 MTD blowholes with their masks when
../shared/data/mtd is present, else 10 noise images with rectangle masks.

    python benchmarks/bench_synthesis.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import inspect
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from anomgen import TexturePool, build_preset
from anomgen.presets import PRESETS

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _texture_dir(tmp: Path) -> Path:
    if (SHARED / "dtd").is_dir():
        return SHARED / "dtd"
    import skimage.data

    folder = tmp / "textures"
    folder.mkdir()
    for name in ("brick", "grass", "gravel"):
        Image.fromarray(getattr(skimage.data, name)()).save(folder / f"{name}.png")
    return folder


def _anomaly_dir(tmp: Path) -> Path:
    folder = tmp / "anomalies"
    folder.mkdir()
    if (SHARED / "mtd").is_dir():
        for image in sorted((SHARED / "mtd" / "MT_Blowhole" / "Imgs").glob("*.jpg"))[:10]:
            shutil.copy(image, folder)
            shutil.copy(image.with_suffix(".png"), folder)
        return folder
    rng = np.random.default_rng(0)
    for i in range(10):
        image = (rng.random((256, 256, 3)) * 255).astype(np.uint8)
        mask = np.zeros((256, 256), np.uint8)
        mask[100 + i : 140 + i, 90:150] = 255
        Image.fromarray(image).save(folder / f"defect_{i}.jpg")
        Image.fromarray(mask).save(folder / f"defect_{i}.png")
    return folder


def _rate(fn, seconds: float, per_call: int) -> float:
    fn()  # warm-up (caches resized textures)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        count += per_call
    return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args(argv)
    if not 0 < args.seconds < float("inf"):
        parser.error(f"--seconds must be a finite number > 0, got {args.seconds}")
    if args.batch < 1:
        parser.error(f"--batch must be >= 1, got {args.batch}")
    torch.set_num_threads(1)
    import cv2

    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        folders = {"textures": _texture_dir(tmp), "anomalies": _anomaly_dir(tmp)}
        # One pool for every preset, each texture resized once beforehand: 3 s of drawing
        # would otherwise also time a first resize for most of DTD's 1,200 textures.
        textures = TexturePool(folders["textures"])
        for index in range(len(textures)):
            textures.get(index, (256, 256), 3, torch.device("cpu"))
        images = torch.rand((args.batch, 3, 256, 256), generator=torch.Generator().manual_seed(0))
        print(
            f"torch {torch.__version__}, 1 thread, 256x256 RGB, textures from {folders['textures']}"
        )
        print(f"{'preset':<10} {'one at a time':>16} {'batch of ' + str(args.batch):>16}")
        for name in ("draem", "cutpaste", "prn"):
            takes = inspect.signature(PRESETS[name]).parameters
            data = {**folders, "textures": textures}
            transform = build_preset(name, **{k: v for k, v in data.items() if k in takes})
            seeds = iter(range(10**9))

            def one(t=transform, s=seeds):
                return t(images[0], seed=next(s))

            def batch(t=transform, s=seeds):
                return t(images, seeds=[next(s) for _ in range(args.batch)])

            single = _rate(one, args.seconds, 1)
            batched = _rate(batch, args.seconds, args.batch)
            print(f"{name:<10} {single:>12.0f} im/s {batched:>12.0f} im/s")


if __name__ == "__main__":
    main()
