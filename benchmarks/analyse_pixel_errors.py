"""Where a checkpoint's pixel errors come from, and what averaging two checkpoints changes.

Scores a checkpoint's test set (the split rebuilt from its own config and seed) and ranks
the defect pixels of each type against three sets of normal pixels: all of them (the usual
pixel AUROC), those of the normal test images only, the normal pixels of the same type's
anomalous images (the ground around each defect), and those of them more than
``--margin`` pixels from any defect. When the second figure is far above the first, the
errors sit in the anomalous images, not on normal parts; the last column tells maps that
spill over the mask's outline from responses farther away.

With ``--ensemble OTHER`` (a checkpoint of the same data, split and image size; both with a
memory bank) it also scores the mean of the two models' fused maps in their calibrated,
standardised scale. ``--bank-weight`` overrides the memory bank's weight in each model's
fusion. Settings compared on the test set are optimistic: the ten-shot protocol has no
anomalous validation set.

    python benchmarks/analyse_pixel_errors.py runs/benchmark_band/seed0/checkpoint.pt \\
        --ensemble runs/benchmark_bank/seed0/checkpoint.pt --bank-weight 0.333
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from prn_model.data import Split, load_mask, load_records
from prn_model.memory_bank import patch_features
from prn_model.metrics import auroc, evaluate
from prn_model.network import PRN

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks._cli import load_run  # noqa: E402

METRICS = ("image_auroc", "pixel_auroc", "aupro", "pixel_ap")


def load_test_masks(split: Split, size: int) -> np.ndarray:
    """(N, size, size) masks of the test set, in its order (the images are not decoded)."""
    return np.stack([load_mask(record.mask, size)[0].numpy() for record in split.test])


@torch.no_grad()
def map_components(model: PRN, split: Split, size: int) -> tuple[Tensor, Tensor | None]:
    """(N, H, W) maps of the test set: PRN's logits and the memory bank's distances, each in
    the bank's calibrated standardised scale (plain logits and None without a bank)."""
    bank = model.memory_bank
    logit_maps, distance_maps = [], []
    for start in tqdm(range(0, len(split.test), 16), desc="maps", unit="batch", leave=False):
        images, _ = load_records(split.test[start : start + 16], size, model.grayscale_input)
        features = model.extract_features(images)
        logits = model.head(features, images.shape[-2:])[:, 0]
        if bank is None:
            logit_maps.append(logits)
            continue
        logit_mean, logit_std, distance_mean, distance_std = bank.calibration
        distance = bank.distance_map(patch_features(features), images.shape[-2:])[:, 0]
        logit_maps.append((logits - logit_mean) / logit_std)
        distance_maps.append((distance - distance_mean) / distance_std)
    return torch.cat(logit_maps), torch.cat(distance_maps) if distance_maps else None


def standardised_maps(model: PRN, split: Split, size: int, bank_weight: float | None) -> Tensor:
    """(N, H, W) fused maps in the model's standardised scale (plain logits without a bank)."""
    prn, distance = map_components(model, split, size)
    if distance is None:
        return prn
    assert model.memory_bank is not None
    weight = model.memory_bank.weight if bank_weight is None else bank_weight
    return (1 - weight) * prn + weight * distance


def probabilities(model: PRN, maps: Tensor) -> Tensor:
    """Standardised maps back in ``model``'s probability scale, as its ``anomaly_map`` gives."""
    if model.memory_bank is None:
        return torch.sigmoid(maps)
    logit_mean, logit_std = model.memory_bank.calibration[:2]
    return torch.sigmoid(logit_mean + logit_std * maps)


def near_defects(masks: np.ndarray, margin: int) -> np.ndarray:
    """(N, H, W) boolean: pixels within ``margin`` pixels (square neighbourhood) of a defect."""
    dilated = F.max_pool2d(
        torch.from_numpy(masks).float()[:, None], 2 * margin + 1, stride=1, padding=margin
    )
    return dilated[:, 0].numpy() > 0


def error_sources(
    maps: np.ndarray, masks: np.ndarray, labels: np.ndarray, types: list, margin: int
) -> dict[str, tuple[float, ...]]:
    """Pixel AUROC of each type's defect pixels (and of all) against all normal pixels, the
    pixels of normal images only, the normal pixels of that type's anomalous images, and
    those of them farther than ``margin`` pixels (square neighbourhood) from a defect; last,
    the share of that far ground scoring above the 99th percentile of the normal images'
    pixels (0.01 if it looked like normal ground)."""
    types = np.array(types, dtype=object)
    ground = ~masks
    normal_images = ground & (labels == 0)[:, None, None]
    near = near_defects(masks, margin)
    normal_p99 = np.quantile(maps[normal_images], 0.99)
    table = {}
    for name in ["all", *dict.fromkeys(types[labels == 1])]:
        chosen = (labels == 1) if name == "all" else (types == name) & (labels == 1)
        defect = masks & chosen[:, None, None]
        own_ground = ground & chosen[:, None, None]
        cells = []
        for negatives in (ground, normal_images, own_ground, own_ground & ~near):
            scores = np.concatenate([maps[defect], maps[negatives]])
            truth = np.concatenate([np.ones(defect.sum()), np.zeros(negatives.sum())])
            cells.append(auroc(scores, truth))
        cells.append(float((maps[own_ground & ~near] > normal_p99).mean()))
        table[str(name)] = tuple(cells)
    return table


def print_error_sources(table: dict[str, tuple[float, ...]], margin: int) -> None:
    far = f"vs ground > {margin} px off"
    print(
        f"{'defect pixels':>14} {'vs all normal':>14} {'vs normal images':>17}"
        f" {'vs own ground':>14} {far:>22} {'far ground > normal p99':>24}"
    )
    for name, (every, normal, own, own_far, hot) in table.items():
        print(
            f"{name:>14} {every:>14.4f} {normal:>17.4f} {own:>14.4f} {own_far:>22.4f} {hot:>24.3f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--ensemble", type=Path, help="a second checkpoint to average with")
    parser.add_argument("--bank-weight", type=float, help="memory-bank weight in each fusion")
    parser.add_argument(
        "--margin", type=int, default=8, help="pixels around a defect that count as near it"
    )
    args = parser.parse_args(argv)
    if args.bank_weight is not None and not 0.0 <= args.bank_weight <= 1.0:
        parser.error(f"--bank-weight must be in [0, 1], got {args.bank_weight}")
    if args.margin < 1:
        parser.error(f"--margin must be >= 1, got {args.margin}")
    if args.ensemble is not None and args.ensemble.resolve() == args.checkpoint.resolve():
        parser.error(f"--ensemble {str(args.ensemble)!r} is the checkpoint itself")
    model, config, split = load_run(parser, args.checkpoint)
    if args.bank_weight is not None and model.memory_bank is None:
        parser.error(f"--bank-weight needs a memory bank; {str(args.checkpoint)!r} has none")
    if args.ensemble is not None:
        other, other_config, other_split = load_run(parser, args.ensemble)
        if other_split.test != split.test or other_config.image_size != config.image_size:
            parser.error(f"{str(args.ensemble)!r} was not evaluated on the same test set and size")
        if model.memory_bank is None or other.memory_bank is None:
            parser.error("an ensemble needs two checkpoints with a memory bank (calibration)")
    labels = np.array([r.label for r in split.test])
    types = [r.defect_type for r in split.test]
    masks = load_test_masks(split, config.image_size) > 0.5
    first = standardised_maps(model, split, config.image_size, args.bank_weight)
    runs = {str(args.checkpoint): first}
    if args.ensemble is not None:
        second = standardised_maps(other, split, config.image_size, args.bank_weight)
        runs[str(args.ensemble)] = second
        runs["mean of both"] = (first + second) / 2
    print(" ".join(f"{m:>11}" for m in METRICS) + "  maps")
    for name, maps in runs.items():
        maps = probabilities(model, maps)
        result = evaluate(model.image_score(maps).numpy(), labels, maps.numpy(), masks, types)
        print(" ".join(f"{result[m]:>11.4f}" for m in METRICS) + f"  {name}")
    for name, maps in runs.items():
        print(f"\nwhere pixel AUROC is lost: {name}")
        table = error_sources(maps.numpy(), masks, labels, types, args.margin)
        print_error_sources(table, args.margin)


if __name__ == "__main__":
    main()
