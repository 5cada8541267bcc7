"""How much a checkpoint's scores owe to other images of the same physical tiles.

MTD shows each tile under six or seven lightings (``prn_model.data.mtd_tile_groups``). Split
image by image (``split_by="image"``, the issue's protocol), a test tile has its other lightings
in the normal training images, and the few-shot anomalies' other lightings stay in the test set.
This script rebuilds each checkpoint's split, counts both leaks, and scores the test set three
ways: whole, only the drawn tiles' other lightings (beside every normal test image), and
without them.

    python benchmarks/tile_twins.py runs/benchmark_normalised/seed{0,1,2}/checkpoint.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from prn_model.data import Split
from prn_model.metrics import evaluate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks._cli import load_run  # noqa: E402
from benchmarks.analyse_pixel_errors import (  # noqa: E402
    METRICS,
    load_test_masks,
    probabilities,
    standardised_maps,
)


def drawn_tile_twins(split: Split) -> np.ndarray:
    """(N,) bool over ``split.test``: anomalous images of a tile a few-shot image shows."""
    drawn = {r.group for r in split.few_shot if r.group is not None}
    return np.array([r.label == 1 and r.group in drawn for r in split.test])


def tile_leaks(split: Split) -> dict[str, int]:
    """Test images whose tile also appears in training, normal and anomalous."""
    train_tiles = {r.group for r in split.train_normal if r.group is not None}
    normals = [r for r in split.test if r.label == 0]
    return {
        "test normals": len(normals),
        "test normals with their tile in training": sum(r.group in train_tiles for r in normals),
        "test anomalies": sum(r.label == 1 for r in split.test),
        "test anomalies of a few-shot tile": int(drawn_tile_twins(split).sum()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", type=Path, nargs="+")
    args = parser.parse_args(argv)
    loaded = [load_run(parser, path) for path in args.checkpoints]
    for path, (model, config, split) in zip(args.checkpoints, loaded):
        print(f"\n{path} (split by {config.split_by})")
        for name, count in tile_leaks(split).items():
            print(f"  {name}: {count}")
        labels = np.array([r.label for r in split.test])
        types = np.array([r.defect_type for r in split.test])
        masks = load_test_masks(split, config.image_size) > 0.5
        maps = probabilities(model, standardised_maps(model, split, config.image_size, None))
        scores = model.image_score(maps).numpy()
        maps = maps.numpy()
        twins = drawn_tile_twins(split)
        subsets = {
            "whole test set": np.ones(len(labels), dtype=bool),
            "the few-shot tiles' other images": twins | (labels == 0),
            "without them": ~twins,
        }
        print("  " + " ".join(f"{m:>11}" for m in METRICS) + "  images scored")
        for name, keep in subsets.items():
            if not labels[keep].any():
                print(f"  {'n/a':>11} {'':>35}  {name}: no anomalous image")
                continue
            result = evaluate(scores[keep], labels[keep], maps[keep], masks[keep], types[keep])
            print("  " + " ".join(f"{result[m]:>11.4f}" for m in METRICS) + f"  {name}")


if __name__ == "__main__":
    main()
