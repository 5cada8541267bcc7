"""Test-time flips: re-score a checkpoint's test set with maps averaged over flipped inputs.

Each test image is also run flipped left-right (and, for "hv", upside down); the flipped
maps are flipped back and averaged with the plain one. PRN's whole-map prototypes are
matched to the image as it is, so a flip changes what the residuals compare; this shows
whether averaging still helps. The maps are the model's own ``anomaly_map`` (memory-bank
fusion included), so the plain row is the run's metrics. The split is rebuilt from the
checkpoint's config and seed.

    python benchmarks/ablate_flip_tta.py runs/benchmark/seed0/checkpoint.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from prn_model.data import Split, load_records
from prn_model.metrics import evaluate
from prn_model.network import PRN
from prn_model.train import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks._cli import load_run  # noqa: E402

METRICS = ("image_auroc", "pixel_auroc", "aupro", "pixel_ap")
# Name -> image dimensions flipped in each extra pass.
VARIANTS = {"plain": [], "h": [[-1]], "hv": [[-1], [-2]]}


@torch.no_grad()
def flip_metrics(model: PRN, config: TrainConfig, split: Split) -> dict[str, dict]:
    """``evaluate``'s metrics of the test set for each of ``VARIANTS``."""
    maps = {(): [], (-1,): [], (-2,): []}
    masks = []
    for start in tqdm(range(0, len(split.test), 16), desc="maps", unit="batch"):
        images, batch_masks = load_records(
            split.test[start : start + 16], config.image_size, model.grayscale_input
        )
        for dims in maps:
            flipped = images.flip(dims) if dims else images
            probabilities = model.anomaly_map(flipped)
            maps[dims].append((probabilities.flip(dims) if dims else probabilities)[:, 0])
        masks.append(batch_masks[:, 0])
    stacked = {dims: torch.cat(parts).numpy() for dims, parts in maps.items()}
    mask_array = torch.cat(masks).numpy()
    labels = np.array([r.label for r in split.test])
    types = [r.defect_type for r in split.test]
    results = {}
    for name, extra in VARIANTS.items():
        averaged = np.mean([stacked[()]] + [stacked[tuple(d)] for d in extra], axis=0)
        scores = model.image_score(torch.from_numpy(averaged)).numpy()
        results[name] = evaluate(scores, labels, averaged, mask_array, types)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    args = parser.parse_args(argv)
    model, config, split = load_run(parser, args.checkpoint)
    results = flip_metrics(model, config, split)
    print(f"{'flips':>6} " + " ".join(f"{m:>11}" for m in METRICS))
    for name, result in results.items():
        print(f"{name:>6} " + " ".join(f"{result[m]:>11.4f}" for m in METRICS))


if __name__ == "__main__":
    main()
