"""Check MTD's tile groups against the images: is each image most like the images of its group?

``prn_model.data.mtd_tile_groups`` groups MTD's images into physical tiles from file names
alone (frame numbers). This script checks that grouping on the pixels. Each image is
resized to ``--size`` px square and standardised to zero mean and unit variance (so
exposure does not count), and compared with every other image of its class by normalised
cross-correlation. Printed per class: how often an image's most similar image lies in its own
group, against the share a random pick would reach; the median best similarity inside and
outside the own group; and, for the defect classes, the median IoU of the defect masks
(thresholded at 128, resized to the same square) between images of one group and between
images of different groups. MTD's images are crops of varied sizes (nearly every image has
its own size), so a match is not a matter of image shape.

    python benchmarks/check_tile_groups.py --root ../shared/data/mtd
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from prn_model.data import Record, group_key, read_mtd

# The MTD copy beside the checkout, wherever the script is run from.
MTD = Path(__file__).resolve().parents[2] / "shared" / "data" / "mtd"


def appearance_vector(image: np.ndarray, size: int) -> np.ndarray:
    """The grey image resized to ``size`` x ``size``, standardised, flattened to unit norm."""
    if image.ndim != 2 or min(image.shape) == 0:
        raise ValueError(f"image must be a non-empty 2-D grey image, got shape {image.shape}")
    resized = cv2.resize(image.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    centred = resized - resized.mean()
    norm = np.linalg.norm(centred)
    if norm == 0:
        raise ValueError("image is flat: its appearance cannot be compared")
    return (centred / norm).ravel()


def group_agreement(vectors: np.ndarray, groups: list[object]) -> dict[str, float]:
    """How well each row's most similar other row (by dot product) agrees with ``groups``.

    Returns the share of rows whose most similar row is in their group (``nearest_in_group``),
    the share a uniformly random other row would reach (``chance``), and the median over rows
    of the best similarity inside (``best_inside``) and outside (``best_outside``) the row's
    group (NaN where a group holds one row, or one group holds all rows).
    """
    if vectors.ndim != 2 or len(vectors) != len(groups) or len(vectors) < 2:
        raise ValueError(
            f"need at least 2 vectors with one group each, got {vectors.shape} and "
            f"{len(groups)} groups"
        )
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    labels = np.array([str(g) for g in groups])
    same = labels[:, None] == labels[None, :]
    np.fill_diagonal(same, False)
    nearest = similarity.argmax(axis=1)
    sizes = Counter(labels)
    n = len(labels)
    inside = np.where(same, similarity, -np.inf).max(axis=1)
    outside = np.where(~same, similarity, -np.inf).max(axis=1)  # the diagonal is -inf already
    return {
        "nearest_in_group": float(same[np.arange(n), nearest].mean()),
        "chance": float(np.mean([(sizes[g] - 1) / (n - 1) for g in labels])),
        "best_inside": _finite_median(inside),
        "best_outside": _finite_median(outside),
    }


def mask_iou(masks: np.ndarray, groups: list[object]) -> tuple[float, float]:
    """Median IoU of the boolean ``masks`` (N, H, W) over pairs of one group and of two groups.

    Pairs where both masks are empty are left out (their IoU is undefined).
    """
    if masks.ndim != 3 or masks.dtype != bool or len(masks) != len(groups):
        raise ValueError(f"masks must be (N, H, W) bool with one group each, got {masks.shape}")
    flat = masks.reshape(len(masks), -1).astype(np.float64)
    intersection = flat @ flat.T
    areas = flat.sum(axis=1)
    union = areas[:, None] + areas[None, :] - intersection
    labels = np.array([str(g) for g in groups])
    same = labels[:, None] == labels[None, :]
    upper = np.triu(np.ones_like(same), k=1) & (union > 0)
    iou = np.divide(intersection, union, out=np.zeros_like(union), where=union > 0)
    return _finite_median(iou[upper & same]), _finite_median(iou[upper & ~same])


def _finite_median(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else float("nan")


def _read_grey(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise SystemExit(f"cannot read image {path}")
    return image


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=MTD, help="MTD root (../shared/data/mtd)")
    parser.add_argument("--size", type=int, default=128, help="side of the compared square, px")
    args = parser.parse_args(argv)
    if args.size < 4:
        parser.error(f"--size must be at least 4, got {args.size}")
    try:
        records = read_mtd(args.root)
    except (OSError, ValueError) as error:
        parser.error(f"--root: {error}")
    by_class: dict[str, list[Record]] = {}
    for record in records:
        by_class.setdefault(record.defect_type, []).append(record)
    print(
        f"{'class':<10} {'images':>6} {'groups':>6} {'sizes':>6} {'nearest in group':>16} "
        f"{'chance':>6} {'best inside':>11} {'best outside':>12} "
        f"{'mask IoU inside':>15} {'mask IoU outside':>16}"
    )
    for name, members in by_class.items():
        groups = [group_key(r) for r in members]
        greys = [_read_grey(r.image) for r in tqdm(members, desc=name, leave=False)]
        vectors = np.stack([appearance_vector(g, args.size) for g in greys])
        agreement = group_agreement(vectors, groups)
        iou_inside = iou_outside = "n/a"
        if all(r.label == 1 and r.mask is not None for r in members):
            masks = []
            for record, grey in zip(members, greys, strict=True):
                mask = _read_grey(record.mask)
                if mask.shape != grey.shape:
                    raise SystemExit(f"mask {record.mask} does not match image {record.image}")
                masks.append(
                    cv2.resize(mask, (args.size, args.size), interpolation=cv2.INTER_AREA) >= 128
                )
            inside, outside = mask_iou(np.stack(masks), groups)
            iou_inside, iou_outside = f"{inside:.3f}", f"{outside:.3f}"
        sizes = len({g.shape for g in greys})
        print(
            f"{name:<10} {len(members):>6} {len(set(groups)):>6} {sizes:>6} "
            f"{agreement['nearest_in_group']:>16.3f} {agreement['chance']:>6.3f} "
            f"{agreement['best_inside']:>11.3f} {agreement['best_outside']:>12.3f} "
            f"{iou_inside:>15} {iou_outside:>16}"
        )


if __name__ == "__main__":
    main()
