"""Test-time flips: re-score a checkpoint's test set with maps averaged over flipped inputs.

Each test image is also run flipped left-right (and, for "hv", upside down); the flipped
maps are flipped back and averaged with the plain one. PRN's whole-map prototypes are
matched to the image as it is, so a flip changes what the residuals compare; this shows
whether averaging still helps. The split is rebuilt from the checkpoint's config and seed.

    python benchmarks/ablate_flip_tta.py runs/benchmark/seed0/checkpoint.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from prn_model.data import load_records
from prn_model.metrics import evaluate
from prn_model.train import TrainConfig, config_split, load_checkpoint, read_records
from prn_model.zoo import load_model

METRICS = ("image_auroc", "pixel_auroc", "aupro", "pixel_ap")
# Name -> image dimensions flipped in each extra pass.
VARIANTS = {"plain": [], "h": [[-1]], "hv": [[-1], [-2]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    args = parser.parse_args()
    config = TrainConfig.from_dict(load_checkpoint(args.checkpoint)["config"])
    model = load_model(args.checkpoint).eval()
    records = read_records(config, args.checkpoint.parent.parent / ".cache")
    split = config_split(config, records)
    maps = {(): [], (-1,): [], (-2,): []}
    masks = []
    with torch.no_grad():
        for start in tqdm(range(0, len(split.test), 16), desc="maps", unit="batch"):
            images, batch_masks = load_records(split.test[start : start + 16], config.image_size)
            for dims in maps:
                flipped = images.flip(dims) if dims else images
                probabilities = torch.sigmoid(model(flipped))
                maps[dims].append((probabilities.flip(dims) if dims else probabilities)[:, 0])
            masks.append(batch_masks[:, 0])
    stacked = {dims: torch.cat(parts).numpy() for dims, parts in maps.items()}
    mask_array = torch.cat(masks).numpy()
    labels = np.array([r.label for r in split.test])
    types = [r.defect_type for r in split.test]
    print(f"{'flips':>6} " + " ".join(f"{m:>11}" for m in METRICS))
    for name, extra in VARIANTS.items():
        averaged = np.mean([stacked[()]] + [stacked[tuple(d)] for d in extra], axis=0)
        scores = model.image_score(torch.from_numpy(averaged)).numpy()
        result = evaluate(scores, labels, averaged, mask_array, types)
        print(f"{name:>6} " + " ".join(f"{result[m]:>11.4f}" for m in METRICS))


if __name__ == "__main__":
    main()
