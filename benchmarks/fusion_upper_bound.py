"""How far any pixel-wise fusion of PRN's map and the memory bank's map can go.

A learned fusion (or any other rule for combining the two maps) could only be worth building
if the two maps together held the missing information. This script bounds that from above: it
fits a gradient-boosted classifier to the defect masks of a checkpoint's own test set, per
pixel, from the two standardised maps alone ("maps"), then with context as well ("maps +
context": 9 px and 33 px local means of each map, each tile's median and 90th percentile of
each map, and the distance from the tile's top and bottom edge, where MTD's `Uneven` bands
start). It is two-fold cross-validated over the test tiles (split within each defect type), so
every score comes from a classifier that never saw that tile, but it has seen the other half of
the test set's labels, which no real fusion can. A metric that even this fit does not lift to a
target is out of reach of any fusion of these two maps.

Maps are block-averaged to ``--size`` pixels (masks: at least half of the block) to keep the fit
cheap; the model's own fusion is scored at the same size beside it.

    python benchmarks/fusion_upper_bound.py runs/benchmark_normalised/seed0/checkpoint.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.ndimage import uniform_filter
from sklearn.ensemble import HistGradientBoostingClassifier

from prn_model.metrics import aupro, auroc, average_precision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks._cli import load_run  # noqa: E402
from benchmarks.analyse_pixel_errors import load_test_masks, map_components  # noqa: E402

METRICS = ("pixel_auroc", "aupro", "pixel_ap")


def block_mean(maps: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size) means of ``size`` x ``size`` blocks of (N, H, W) maps."""
    n, height, width = maps.shape
    if height % size or width % size:
        raise ValueError(f"--size {size} must divide the maps' {height}x{width}")
    return maps.reshape(n, size, height // size, size, width // size).mean(axis=(2, 4))


def pixel_features(prn: np.ndarray, distance: np.ndarray, context: bool) -> np.ndarray:
    """(N * H * W, F) per-pixel features of (N, H, W) standardised maps."""
    columns = [prn, distance]
    if context:
        for maps in (prn, distance):
            flat = maps.reshape(len(maps), -1)
            columns += [
                uniform_filter(maps, size=(1, 9, 9)),
                uniform_filter(maps, size=(1, 33, 33)),
                np.broadcast_to(np.median(flat, axis=1)[:, None, None], maps.shape),
                np.broadcast_to(np.percentile(flat, 90, axis=1)[:, None, None], maps.shape),
            ]
        rows = np.abs(np.linspace(-1.0, 1.0, maps.shape[1]))
        columns.append(np.broadcast_to(rows[None, :, None], maps.shape))
    return np.stack([c.reshape(-1) for c in columns], axis=1).astype(np.float32)


def two_folds(types: list[str], seed: int) -> np.ndarray:
    """0 or 1 per tile: half of each defect type (and of the normal tiles) in each fold."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(types), dtype=int)
    for name in sorted(set(types)):
        members = np.flatnonzero(np.asarray(types) == name)
        rng.shuffle(members)
        fold[members[::2]] = 1
    return fold


def cross_validated_map(
    prn: np.ndarray,
    distance: np.ndarray,
    masks: np.ndarray,
    fold: np.ndarray,
    context: bool,
    train_pixels: int,
    seed: int,
) -> np.ndarray:
    """(N, H, W) decision values, each tile's from the classifier fitted on the other fold."""
    rng = np.random.default_rng(seed)
    out = np.zeros(prn.shape, dtype=np.float32)
    for held_out in (0, 1):
        fit, test = fold != held_out, fold == held_out
        features = pixel_features(prn[fit], distance[fit], context)
        targets = masks[fit].reshape(-1)
        rows = rng.choice(len(targets), min(train_pixels, len(targets)), replace=False)
        classifier = HistGradientBoostingClassifier(max_iter=200, random_state=seed)
        classifier.fit(features[rows], targets[rows])
        scores = classifier.decision_function(pixel_features(prn[test], distance[test], context))
        out[test] = scores.reshape(prn[test].shape)
    return out


def pixel_metrics(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Pixel AUROC, AUPRO and pixel AP of (N, H, W) maps over all tiles pooled."""
    return {
        "pixel_auroc": auroc(maps.ravel(), masks.ravel()),
        "aupro": aupro(maps, masks),
        "pixel_ap": average_precision(maps.ravel(), masks.ravel()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", type=Path, nargs="+", help="checkpoints with a memory bank")
    parser.add_argument("--size", type=int, default=128, help="map side the fit runs at")
    parser.add_argument(
        "--train-pixels", type=int, default=300_000, help="pixels drawn to fit each fold"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.size < 8 or args.train_pixels < 1000:
        parser.error("--size must be >= 8 and --train-pixels >= 1000")
    loaded = [load_run(parser, path) for path in args.checkpoints]
    for path, (model, config, _) in zip(args.checkpoints, loaded):
        if model.memory_bank is None:
            parser.error(f"{str(path)!r} has no memory bank: nothing to fuse")
        if config.image_size % args.size:
            size = config.image_size
            parser.error(f"--size {args.size} must divide the image size {size} of {str(path)!r}")
    results: dict[str, list[dict]] = {}
    for path, (model, config, split) in zip(args.checkpoints, loaded):
        prn, distance = (m.numpy() for m in map_components(model, split, config.image_size))
        masks = load_test_masks(split, config.image_size)
        prn, distance = block_mean(prn, args.size), block_mean(distance, args.size)
        masks = block_mean(masks, args.size) >= 0.5
        fold = two_folds([r.defect_type for r in split.test], args.seed)
        weight = model.memory_bank.weight
        candidates = {f"the model's fusion (bank weight {weight:g})": None}
        candidates |= {"learned from maps": False, "learned from maps + context": True}
        print(f"\n{path}")
        print(" ".join(f"{m:>11}" for m in METRICS) + "  map")
        for name, context in candidates.items():
            if context is None:
                maps = (1 - weight) * prn + weight * distance
            else:
                maps = cross_validated_map(
                    prn, distance, masks, fold, context, args.train_pixels, args.seed
                )
            result = pixel_metrics(maps, masks)
            results.setdefault(name, []).append(result)
            print(" ".join(f"{result[m]:>11.4f}" for m in METRICS) + f"  {name}", flush=True)
    if len(args.checkpoints) > 1:
        print("\nmean over the checkpoints")
        for name, runs in results.items():
            means = [np.mean([r[m] for r in runs]) for m in METRICS]
            print(" ".join(f"{v:>11.4f}" for v in means) + f"  {name}")


if __name__ == "__main__":
    main()
