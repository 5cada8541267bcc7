"""Map-smoothing ablation: re-score a trained checkpoint with PRN's logit map Gaussian-blurred.

PatchCore-style maps are smoothed (the memory bank's is, at sigma = image size / 64); PRN's
decoder output is not. This blurs PRN's logits at each ``--sigmas`` value (pixels at the
network's resolution) before the fusion with the memory bank, if the model has one, and
prints the test metrics per sigma. Sigma 0 is the model as trained, so its row equals the
run's own metrics. The split is rebuilt from the checkpoint's config and seed.

    python benchmarks/ablate_map_smoothing.py runs/benchmark/seed0/checkpoint.pt --sigmas 0 2 4
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from prn_model.data import Split, load_records
from prn_model.memory_bank import patch_features
from prn_model.metrics import evaluate
from prn_model.network import PRN
from prn_model.train import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks._cli import load_run  # noqa: E402

METRICS = ("image_auroc", "pixel_auroc", "aupro", "pixel_ap", "pixel_f1_max")


def blur_logits(logits: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, 1, H, W) logits blurred per map (reflected borders); sigma 0 returns them as they are."""
    if sigma == 0:
        return logits
    planes = [
        cv2.GaussianBlur(plane, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
        for plane in logits[:, 0].numpy()
    ]
    return torch.from_numpy(np.stack(planes))[:, None]


def smoothing_metrics(
    model: PRN, config: TrainConfig, split: Split, sigmas: list[float]
) -> dict[float, dict]:
    """Test metrics of ``model`` with its logits blurred at each sigma (features computed once)."""
    maps: dict[float, list[torch.Tensor]] = {sigma: [] for sigma in sigmas}
    masks = []
    with torch.no_grad():
        for start in tqdm(range(0, len(split.test), 16), desc="maps", unit="batch"):
            images, chunk_masks = load_records(
                split.test[start : start + 16], config.image_size, model.grayscale_input
            )
            features = model.extract_features(images)
            logits = model.head(features, images.shape[-2:])
            bank = model.memory_bank
            distance = (
                None
                if bank is None
                else bank.distance_map(patch_features(features), images.shape[-2:])
            )
            for sigma in sigmas:
                blurred = blur_logits(logits, sigma)
                fused = blurred if bank is None else bank.fuse(blurred, distance)
                maps[sigma].append(torch.sigmoid(fused)[:, 0])
            masks.append(chunk_masks[:, 0])
    labels = np.array([record.label for record in split.test])
    types = [record.defect_type for record in split.test]
    all_masks = torch.cat(masks).numpy()
    results = {}
    for sigma in sigmas:
        sigma_maps = torch.cat(maps[sigma])
        scores = model.image_score(sigma_maps).numpy()
        results[sigma] = evaluate(scores, labels, sigma_maps.numpy(), all_masks, types)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 1.0, 2.0, 4.0, 8.0])
    args = parser.parse_args(argv)
    if not all(math.isfinite(s) and 0 <= s <= 64 for s in args.sigmas):
        parser.error(f"every --sigmas value must be in [0, 64] pixels, got {args.sigmas}")
    if len(set(args.sigmas)) != len(args.sigmas):
        parser.error(f"--sigmas repeats a value: {args.sigmas}")
    model, config, split = load_run(parser, args.checkpoint)
    results = smoothing_metrics(model, config, split, args.sigmas)
    print(f"{'sigma':>6} " + " ".join(f"{name:>12}" for name in METRICS))
    for sigma, metrics in results.items():
        print(f"{sigma:>6g} " + " ".join(f"{metrics[name]:>12.4f}" for name in METRICS))


if __name__ == "__main__":
    main()
