"""Regenerate docs/images/anomgen_preview.png with `anomgen preview`.

Seed 1199 happens to draw each of the eight strategies twice.

Only scikit-image's bundled CC0 images are used (no dataset is committed): crops of
`gravel` and `grass` are the normal images, `brick` and `grass` the textures, and the
"real anomalies" are coins cut out of `coins` with an Otsu mask.

    python docs/make_preview.py
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import skimage.data
import yaml
from PIL import Image
from skimage.filters import threshold_otsu

from anomgen import (
    Crack,
    CutPaste,
    CutPasteScar,
    EdgeBandPaste,
    LocalCorruption,
    OneOf,
    PerlinTexturePaste,
    PoissonPatch,
    SeenAnomalyPaste,
)
from anomgen.cli import main as anomgen_main

OUT = Path(__file__).resolve().parent / "images" / "anomgen_preview.png"
SAMPLES, SEED = 16, 1199


def write_inputs(root: Path) -> dict[str, Path]:
    folders = {name: root / name for name in ("normal", "textures", "anomalies")}
    for folder in folders.values():
        folder.mkdir()
    for name in ("gravel", "grass"):
        texture = getattr(skimage.data, name)()
        for i, (y, x) in enumerate([(0, 0), (200, 250), (300, 60)]):
            Image.fromarray(texture[y : y + 200, x : x + 200]).save(
                folders["normal"] / f"{name}_{i}.png"
            )
    for name in ("brick", "grass"):
        Image.fromarray(getattr(skimage.data, name)()).save(folders["textures"] / f"{name}.png")
    coins = skimage.data.coins()
    for i, (y, x) in enumerate([(10, 10), (110, 140), (190, 260), (20, 300)]):
        crop = coins[y : y + 90, x : x + 80]
        mask = (crop > threshold_otsu(crop)).astype(np.uint8) * 255
        Image.fromarray(crop).save(folders["anomalies"] / f"coin_{i}.jpg")
        Image.fromarray(mask).save(folders["anomalies"] / f"coin_{i}.png")
    return folders


def every_strategy(folders: dict[str, Path]) -> OneOf:
    """Each anomgen synthesis transform once, in equal shares (tests check none is missing)."""
    return OneOf(
        [
            SeenAnomalyPaste(anomalies=folders["anomalies"]),
            PerlinTexturePaste(textures=folders["textures"]),
            CutPaste(),
            CutPasteScar(),
            PoissonPatch(sources=folders["normal"]),
            LocalCorruption(),
            EdgeBandPaste(),
            Crack(),
        ]
    )


def build(out: Path = OUT) -> Path:
    with tempfile.TemporaryDirectory() as name:
        folders = write_inputs(Path(name))
        config = Path(name) / "all.yaml"
        config.write_text(yaml.safe_dump(every_strategy(folders).to_dict()))
        code = anomgen_main(
            [
                "preview",
                "--images",
                str(folders["normal"]),
                "--config",
                str(config),
                "-n",
                str(SAMPLES),
                "--size",
                "128",
                "--seed",
                str(SEED),
                "--out",
                str(out),
            ]
        )
    if code:
        raise SystemExit(code)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="the PNG to write")
    print(f"wrote {build(parser.parse_args(argv).out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
