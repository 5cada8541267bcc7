"""Grey-level mean and contrast of every MTD class, on the whole tile and on its ground only.

A model trained on normal tiles flags anything its normal tiles never showed, and an
acquisition difference between the normal and the defective tiles is such a thing. This
prints, per class, the median and the 10th-90th percentile range over images of each
image's grey-level mean and standard deviation (0-255), over the whole image and over its
ground (mask below 128, dilated by ``--margin`` px, left out), so that a difference that
lies in the defects themselves is told from one of the whole tile.

    python benchmarks/grey_level_stats.py --root ../shared/data/mtd
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from prn_model.data import read_mtd

STATISTICS = ("mean", "std", "ground mean", "ground std")
# The MTD copy beside the checkout, wherever the script is run from.
MTD = Path(__file__).resolve().parents[2] / "shared" / "data" / "mtd"


def grey_level_stats(image: np.ndarray, mask: np.ndarray | None, margin: int) -> np.ndarray:
    """(mean, std, ground mean, ground std) of a grey image; ground = outside the mask
    dilated by ``margin`` px (the whole image without a mask). NaN when no ground is left."""
    if image.ndim != 2:
        raise ValueError(f"image must be a 2-D grey image, got shape {image.shape}")
    ground = np.ones(image.shape, dtype=bool)
    if mask is not None:
        if mask.shape != image.shape:
            raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape}")
        defect = (mask >= 128).astype(np.uint8)
        if margin:
            defect = cv2.dilate(defect, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8))
        ground = defect == 0
    pixels = image.astype(np.float64)
    ground_pixels = pixels[ground]
    if ground_pixels.size == 0:
        return np.array([pixels.mean(), pixels.std(), np.nan, np.nan])
    return np.array([pixels.mean(), pixels.std(), ground_pixels.mean(), ground_pixels.std()])


def summarise(values: np.ndarray) -> str:
    """'median [p10, p90]' of the finite values."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return "n/a"
    low, median, high = np.quantile(finite, [0.1, 0.5, 0.9])
    return f"{median:6.1f} [{low:5.1f}, {high:5.1f}]"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=MTD, help="MTD root (../shared/data/mtd)")
    parser.add_argument("--margin", type=int, default=8, help="px around a defect left out")
    args = parser.parse_args(argv)
    if args.margin < 0:
        parser.error(f"--margin must be >= 0, got {args.margin}")
    try:
        records = read_mtd(args.root)
    except (OSError, ValueError) as error:
        parser.error(f"--root: {error}")
    by_class: dict[str, list[np.ndarray]] = defaultdict(list)
    for record in tqdm(records, desc="images", unit="image"):
        image = cv2.imread(str(record.image), cv2.IMREAD_GRAYSCALE)
        mask = None if record.mask is None else cv2.imread(str(record.mask), cv2.IMREAD_GRAYSCALE)
        if image is None or (record.mask is not None and mask is None):
            raise SystemExit(f"cannot read {record.image} or its mask")
        by_class[record.defect_type].append(grey_level_stats(image, mask, args.margin))
    print(f"{'class':>9} {'images':>6} " + " ".join(f"{name:>20}" for name in STATISTICS))
    for name, rows in by_class.items():
        table = np.stack(rows)
        cells = " ".join(f"{summarise(table[:, i]):>20}" for i in range(len(STATISTICS)))
        print(f"{name:>9} {len(rows):>6} {cells}")


if __name__ == "__main__":
    main()
