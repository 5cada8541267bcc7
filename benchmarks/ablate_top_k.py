"""Image-score ablation: re-score a trained checkpoint's test set with several top-k values.

The anomaly maps are computed once; only the image score (mean of the k largest map
values) changes, so pixel metrics are identical across rows. The split is rebuilt from
the checkpoint's own config and seed, so the test set is exactly the one of the run.

    python benchmarks/ablate_top_k.py runs/benchmark/seed0/checkpoint.pt --k 1 10 100 1000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from prn_model.data import load_record
from prn_model.metrics import auroc, average_precision, f1_max

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks._cli import load_run  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 10, 100, 1000])
    args = parser.parse_args(argv)
    if min(args.k) < 1:
        parser.error(f"every --k must be >= 1, got {args.k}")
    model, config, split = load_run(parser, args.checkpoint)
    flat_maps = []
    with torch.no_grad():
        for record in tqdm(split.test, desc="maps", unit="image"):
            image, _ = load_record(record, config.image_size)
            flat_maps.append(model.anomaly_map(image[None])[0].flatten())
    maps = torch.stack(flat_maps)
    labels = np.array([r.label for r in split.test])
    print(f"{'top-k':>6} {'image AUROC':>12} {'image AP':>9} {'F1-max':>7}")
    for k in args.k:
        scores = maps.topk(min(k, maps.shape[1]), dim=1).values.mean(dim=1).numpy()
        print(
            f"{k:>6} {auroc(scores, labels):>12.4f} {average_precision(scores, labels):>9.4f}"
            f" {f1_max(scores, labels):>7.4f}"
        )


if __name__ == "__main__":
    main()
