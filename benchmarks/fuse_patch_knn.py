"""Does an unsupervised patch-kNN map add to a trained PRN? Re-score a checkpoint's test set.

PRN's maps are fused with a PatchCore-style map computed from the *same frozen encoder*:
the stride-8 and stride-16 features (3x3 average-pooled, concatenated at stride 8) of every
test image are compared with a memory bank of random patch vectors of the normal training
images; the distance to the nearest one, upsampled and smoothed (Gaussian, sigma 4), is the
kNN map. A tenth of the normal training images is held out of the bank to calibrate: each
map is standardised with the mean and standard deviation of its pixels on those images, and
the fused map is ``w * PRN + (1 - w) * kNN``. The image score is the top-k mean of the map.

The weights are compared on the test set itself (there is no anomalous validation set in
the ten-shot protocol), so the best row is optimistic; w = 1 is PRN alone, w = 0 kNN alone.

    python benchmarks/fuse_patch_knn.py runs/benchmark/seed0/checkpoint.pt --weights 0 0.5 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F
from tqdm import tqdm

from prn_model.data import Record, load_records, make_split
from prn_model.metrics import evaluate
from prn_model.network import PRN
from prn_model.train import TrainConfig, load_checkpoint, read_records
from prn_model.zoo import load_model

METRICS = ("image_auroc", "pixel_auroc", "aupro", "pixel_ap")


def patch_features(model: PRN, images: torch.Tensor) -> torch.Tensor:
    """(B, C8 + C16, H/8, W/8): locally averaged stride-8 and stride-16 encoder features."""
    features = model.extract_features(images)
    fine = F.avg_pool2d(features[1], 3, stride=1, padding=1)
    coarse = F.avg_pool2d(features[2], 3, stride=1, padding=1)
    coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
    return torch.cat([fine, coarse], dim=1)


def _batches(records: list[Record], size: int, batch: int = 16):
    for start in range(0, len(records), batch):
        yield load_records(records[start : start + batch], size)


@torch.no_grad()
def build_bank(
    model: PRN, records: list[Record], size: int, bank_size: int, seed: int
) -> torch.Tensor:
    """``bank_size`` patch vectors drawn evenly and by seed from the images of ``records``."""
    generator = torch.Generator().manual_seed(seed)
    per_image = max(1, bank_size // len(records))
    rows = []
    for images, _ in tqdm(_batches(records, size), desc="bank", unit="batch"):
        vectors = patch_features(model, images).flatten(2).transpose(1, 2)  # (B, HW, C)
        for image_vectors in vectors:
            chosen = torch.randperm(image_vectors.shape[0], generator=generator)[:per_image]
            rows.append(image_vectors[chosen])
    return torch.cat(rows)


@torch.no_grad()
def maps_for(
    model: PRN, records: list[Record], size: int, bank: torch.Tensor
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PRN probability maps, kNN distance maps and masks, each (N, size, size)."""
    bank_norms = bank.square().sum(dim=1)
    prn_maps, knn_maps, masks = [], [], []
    for images, batch_masks in tqdm(_batches(records, size), desc="maps", unit="batch"):
        features = model.extract_features(images)
        prn_maps.append(torch.sigmoid(model.head(features, images.shape[-2:]))[:, 0])
        patches = patch_features(model, images)
        b, c, h, w = patches.shape
        vectors = patches.permute(0, 2, 3, 1).reshape(-1, c)
        squared = vectors.square().sum(1, keepdim=True) - 2 * vectors @ bank.T + bank_norms
        distance = squared.min(dim=1).values.clamp_min(0).sqrt().reshape(b, 1, h, w)
        distance = F.interpolate(distance, size=(size, size), mode="bilinear", align_corners=False)
        knn_maps.append(distance[:, 0])
        masks.append(batch_masks[:, 0])
    knn = np.stack([scipy.ndimage.gaussian_filter(m, 4) for m in torch.cat(knn_maps).numpy()])
    return torch.cat(prn_maps).numpy(), knn, torch.cat(masks).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--bank-size", type=int, default=32768)
    args = parser.parse_args()
    if any(not 0.0 <= w <= 1.0 for w in args.weights):
        parser.error(f"weights must be in [0, 1], got {args.weights}")
    started = time.perf_counter()
    config = TrainConfig.from_dict(load_checkpoint(args.checkpoint)["config"])
    model = load_model(args.checkpoint).eval()
    records = read_records(config, args.checkpoint.parent.parent / ".cache")
    split = make_split(records, n_anomalies=config.n_anomalies, seed=config.seed)
    normals = list(split.train_normal)
    np.random.default_rng(config.seed).shuffle(normals)
    calibration, bank_records = normals[: len(normals) // 10], normals[len(normals) // 10 :]
    size = config.image_size
    bank = build_bank(model, bank_records, size, args.bank_size, config.seed)
    calibration_prn, calibration_knn, _ = maps_for(model, calibration, size, bank)
    prn, knn, masks = maps_for(model, split.test, size, bank)
    labels = np.array([r.label for r in split.test])
    types = [r.defect_type for r in split.test]

    def standardised(maps: np.ndarray, reference: np.ndarray) -> np.ndarray:
        return (maps - reference.mean()) / reference.std()

    prn, knn = standardised(prn, calibration_prn), standardised(knn, calibration_knn)
    k = model.config.top_k
    print(f"{args.checkpoint}: bank of {len(bank)} patch vectors, {len(calibration)} images")
    print(f"{'w (PRN)':>8} " + " ".join(f"{m:>11}" for m in METRICS) + "  Uneven AUPRO")
    for w in args.weights:
        fused = w * prn + (1 - w) * knn
        scores = np.sort(fused.reshape(len(fused), -1), axis=1)[:, -k:].mean(axis=1)
        result = evaluate(scores, labels, fused, masks, types)
        uneven = result["per_defect_type"].get("Uneven", {}).get("aupro", float("nan"))
        print(f"{w:>8.2f} " + " ".join(f"{result[m]:>11.4f}" for m in METRICS) + f"  {uneven:.4f}")
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
