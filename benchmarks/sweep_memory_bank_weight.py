"""Fuse a trained PRN with a memory bank after the fact, and score each fusion weight.

Loads a checkpoint of ``recipes/train_prn.py``, adds a memory bank of ``--size`` normal patch
vectors (``prn_model.memory_bank``) filled and calibrated exactly as training does with
``--memory-bank-size`` (a seeded 90 % of the normal training images for the bank, the other
10 % for the calibration), and evaluates the test set for each ``--weights`` value (the weight
of the bank's map; 0 is PRN alone). The weights are compared on the test set itself (the
ten-shot protocol has no anomalous validation set), so the best row is optimistic.

    python benchmarks/sweep_memory_bank_weight.py runs/benchmark/seed0/checkpoint.pt \
        --weights 0 0.25 0.5
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from prn_model.data import load_records
from prn_model.metrics import evaluate
from prn_model.network import PRN
from prn_model.train import memory_bank_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks._cli import load_run  # noqa: E402

METRICS = ("image_auroc", "pixel_auroc", "aupro", "pixel_ap")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75])
    parser.add_argument("--size", type=int, default=8192, help="memory bank vectors")
    args = parser.parse_args(argv)
    if any(not 0.0 <= w <= 1.0 for w in args.weights):
        parser.error(f"weights must be in [0, 1], got {args.weights}")
    if args.size < 1:
        parser.error(f"--size must be >= 1, got {args.size}")
    started = time.perf_counter()
    trained, config, split = load_run(parser, args.checkpoint)
    # The trained PRN without its own bank (if any), beside a new bank of --size vectors.
    model = PRN(dataclasses.replace(trained.config, memory_bank_size=args.size), pretrained=False)
    state = {k: v for k, v in trained.state_dict().items() if not k.startswith("memory_bank.")}
    model.load_state_dict(state, strict=False)
    model.input_channels = trained.input_channels  # not in the state dict; sets how files load
    model.eval()
    size = config.image_size
    bank, calibration = memory_bank_split(len(split.train_normal), config.seed)

    def batches(indices: torch.Tensor):
        for chunk in indices.split(16):
            chunk_records = [split.train_normal[int(i)] for i in chunk]
            yield load_records(chunk_records, size, model.grayscale_input)[0]

    model.fit_memory_bank(batches(bank), batches(calibration), config.seed, progress=True)
    labels = np.array([r.label for r in split.test])
    types = [r.defect_type for r in split.test]
    print(f"{args.checkpoint}: bank of {model.memory_bank.bank.shape[0]} patch vectors")
    print(f"{'weight':>8} " + " ".join(f"{m:>11}" for m in METRICS) + "  Uneven AUPRO")
    for weight in args.weights:
        model.memory_bank.weight = weight
        maps, masks = [], []
        with torch.no_grad():
            for start in tqdm(range(0, len(split.test), 16), desc=f"w={weight}", leave=False):
                images, chunk_masks = load_records(
                    split.test[start : start + 16], size, model.grayscale_input
                )
                maps.append(model.anomaly_map(images)[:, 0])
                masks.append(chunk_masks[:, 0])
        all_maps = torch.cat(maps)
        scores = model.image_score(all_maps).numpy()
        result = evaluate(scores, labels, all_maps.numpy(), torch.cat(masks).numpy(), types)
        uneven = result["per_defect_type"].get("Uneven", {}).get("aupro", float("nan"))
        cells = " ".join(f"{result[m]:>11.4f}" for m in METRICS)
        print(f"{weight:>8.2f} {cells}  {uneven:.4f}")
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
