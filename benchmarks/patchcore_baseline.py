"""The unsupervised baseline PRN is compared with: a PatchCore-style memory bank alone.

For each seed and split unit it rebuilds the MTD ten-shot split that ``recipes/train_prn.py``
uses (``prn_model.data.make_split``), fills a coreset of ``--size`` patch vectors of the frozen
backbone (``prn_model.memory_bank``: stride-8 and stride-16 maps, 3x3-averaged) from all normal
training images, and scores the test set with each pixel's smoothed distance to its nearest
bank vector; the image score is the mean of the ``--top-k`` largest map values, as PRN's. No
anomaly is used: the ten drawn defects only leave the test set, so the test set is PRN's.

    python benchmarks/patchcore_baseline.py --split-by image group
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from prn_model.backbones import create_backbone, list_backbones
from prn_model.data import SPLIT_UNITS, Record, load_records, make_split, read_mtd
from prn_model.memory_bank import PatchMemoryBank, patch_features
from prn_model.metrics import evaluate
from prn_model.network import normalise_intensity

METRICS = ("image_auroc", "pixel_auroc", "aupro", "pixel_ap")
BATCH = 16
# The MTD copy beside the checkout, wherever the script is run from.
MTD = Path(__file__).resolve().parents[2] / "shared" / "data" / "mtd"


def _batches(records: Sequence[Record], size: int, desc: str) -> Iterator[torch.Tensor]:
    for start in tqdm(range(0, len(records), BATCH), desc=desc, leave=False):
        yield load_records(records[start : start + BATCH], size)[0]


def score_split(
    records: Sequence[Record],
    seed: int,
    split_by: str,
    backbone: torch.nn.Module,
    bank_size: int,
    image_size: int,
    top_k: int,
    normalise: bool,
) -> dict:
    """``evaluate``'s metrics of the memory bank alone on one seed's ten-shot split."""
    split = make_split(records, n_anomalies=10, seed=seed, split_by=split_by)

    def features(images: torch.Tensor) -> torch.Tensor:
        return patch_features(backbone(normalise_intensity(images) if normalise else images))

    channels = features(torch.zeros(1, 1, image_size, image_size)).shape[1]
    bank = PatchMemoryBank(channels, bank_size, image_size)
    with torch.no_grad():
        train = _batches(split.train_normal, image_size, "bank")
        bank.fill((features(images) for images in train), seed=seed, progress=True)
        maps, masks = [], []
        for start in tqdm(range(0, len(split.test), BATCH), desc="test", leave=False):
            images, chunk_masks = load_records(split.test[start : start + BATCH], image_size)
            maps.append(bank.distance_map(features(images), (image_size, image_size))[:, 0])
            masks.append(chunk_masks[:, 0])
    all_maps = torch.cat(maps)
    k = min(top_k, all_maps[0].numel())
    scores = all_maps.flatten(1).topk(k, dim=1).values.mean(dim=1)
    labels = np.array([r.label for r in split.test])
    types = [r.defect_type for r in split.test]
    return evaluate(scores.numpy(), labels, all_maps.numpy(), torch.cat(masks).numpy(), types)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=MTD, help="MTD root (../shared/data/mtd)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--split-by", nargs="+", choices=SPLIT_UNITS, default=["image"])
    parser.add_argument("--backbone", choices=list_backbones(), default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=8192, help="memory bank vectors")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--top-k", type=int, default=100, help="map values in the image score")
    parser.add_argument(
        "--intensity-normalisation",
        choices=("none", "image"),
        default="none",
        help="'image': one grey-level mean and contrast per image, as PRN's default on MTD",
    )
    args = parser.parse_args(argv)
    for name in ("size", "image_size", "top_k"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    repeated = sorted({seed for seed in args.seeds if args.seeds.count(seed) > 1})
    if repeated:
        parser.error(f"--seeds repeats {repeated}: a repeated seed would count twice in the std")
    try:
        records = read_mtd(args.root)
    except (OSError, ValueError) as error:
        parser.error(f"--root: {error}")
    backbone = create_backbone(args.backbone, pretrained=True).eval()
    print(
        f"memory bank alone: {args.backbone}, {args.image_size} px, {args.size} vectors, "
        f"top-{args.top_k} image score, intensity normalisation {args.intensity_normalisation}"
    )
    print(f"{'split':>6} {'seed':>5} " + " ".join(f"{m:>11}" for m in METRICS) + "   time (s)")
    for split_by in args.split_by:
        rows = []
        for seed in args.seeds:
            started = time.perf_counter()
            result = score_split(
                records,
                seed,
                split_by,
                backbone,
                args.size,
                args.image_size,
                args.top_k,
                args.intensity_normalisation == "image",
            )
            rows.append([result[m] for m in METRICS])
            cells = " ".join(f"{v:>11.4f}" for v in rows[-1])
            print(f"{split_by:>6} {seed:>5} {cells} {time.perf_counter() - started:>10.0f}")
        values = np.array(rows)
        cells = " ".join(
            f"{m:.3f} ± {s:.3f}".rjust(11)
            for m, s in zip(
                values.mean(0), values.std(0, ddof=1) if len(rows) > 1 else np.zeros(len(METRICS))
            )
        )
        print(f"{split_by:>6} {'mean':>5} {cells}", flush=True)


if __name__ == "__main__":
    main()
