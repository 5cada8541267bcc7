"""Which test images a checkpoint ranks wrongly, and where their maps peak.

Image AUROC says how often an anomalous image outscores a normal one, not which images lose
or why. This script scores a checkpoint's test set (the split rebuilt from its own config and
seed) with the model's own image score and, per defect type, gives the share of anomalous
images scoring below the normal images' ``--quantile`` (missed at that false-alarm rate),
and of those missed, the share whose map still peaks on the defect (within ``--margin``
pixels of its mask: found, but too weakly). Of the normal images above that quantile (the
false alarms), it gives the share whose map peaks within ``--margin`` pixels of the image
border, beside that border band's share of the image (what peaks placed at random would
give). ``--list N`` names the N lowest anomalous and N highest normal images, to look at
with ``prn-predict``. Several checkpoints (seeds) are each scored, then averaged.

    python benchmarks/analyse_image_errors.py runs/bench/seed0/checkpoint.pt \\
        runs/bench/seed1/checkpoint.pt runs/bench/seed2/checkpoint.pt --list 5
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from prn_model.metrics import auroc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks._cli import load_run  # noqa: E402
from benchmarks.analyse_pixel_errors import (  # noqa: E402
    load_test_masks,
    near_defects,
    probabilities,
    standardised_maps,
)

COLUMNS = ("images", "image AUROC", "share of AUROC lost", "missed", "missed, peak on defect")


class TypeErrors(NamedTuple):
    """One defect type's image-level figures (see ``image_errors``)."""

    images: float
    image_auroc: float
    share_of_loss: float  # of 1 - the overall image AUROC
    missed: float
    missed_peak_on_defect: float


@dataclass(frozen=True)
class ImageErrors:
    """One checkpoint's image-level errors (see ``image_errors``)."""

    per_type: dict[str, TypeErrors]
    false_alarms: int
    false_alarms_at_border: float  # share of false alarms peaking within the border band
    border_band_area: float  # the band's share of the image


def peaks(maps: np.ndarray) -> np.ndarray:
    """(N, 2) row and column of each (N, H, W) map's highest pixel (the first one on ties)."""
    flat = maps.reshape(len(maps), -1).argmax(axis=1)
    return np.stack(np.unravel_index(flat, maps.shape[1:]), axis=1)


def image_errors(
    scores: np.ndarray,
    maps: np.ndarray,
    masks: np.ndarray,
    labels: np.ndarray,
    types: list,
    quantile: float,
    margin: int,
) -> ImageErrors:
    """Per defect type (and ``all``): image count, image AUROC against every normal image,
    the type's share of what the overall image AUROC loses (1 - AUROC is the mean over
    anomalous images of the share of normal images outscoring them, so a type's share is
    its images' part of that sum), the share scoring at or below the normal scores'
    ``quantile`` (missed), and of the missed ones, the share whose map peaks within
    ``margin`` pixels of their mask (NaN if none is missed; an empty mask never counts as
    peaked on). Then the normal images above that quantile (false alarms), the share of them
    peaking within ``margin`` pixels of the image border, and that band's share of the image."""
    types = np.array(types, dtype=object)
    normal = labels == 0
    threshold = np.quantile(scores[normal], quantile)
    where = peaks(maps)
    rows, cols = where[:, 0], where[:, 1]
    peak_on_defect = near_defects(masks, margin)[np.arange(len(maps)), rows, cols]
    per_type = {}
    for name in ["all", *dict.fromkeys(types[labels == 1])]:
        chosen = labels == 1 if name == "all" else (types == name) & (labels == 1)
        truth = np.concatenate([np.ones(chosen.sum()), np.zeros(normal.sum())])
        image_auroc = auroc(np.concatenate([scores[chosen], scores[normal]]), truth)
        missed = chosen & (scores <= threshold)
        on_defect = peak_on_defect[missed].mean() if missed.any() else math.nan
        per_type[str(name)] = TypeErrors(
            images=float(chosen.sum()),
            image_auroc=image_auroc,
            share_of_loss=math.nan,  # filled in below, once the overall loss is known
            missed=float(missed.sum() / chosen.sum()),
            missed_peak_on_defect=float(on_defect),
        )
    lost = {name: row.images * (1 - row.image_auroc) for name, row in per_type.items()}
    per_type = {
        name: row._replace(share_of_loss=lost[name] / lost["all"] if lost["all"] else math.nan)
        for name, row in per_type.items()
    }
    height, width = maps.shape[1:]
    border_distance = np.minimum.reduce([rows, cols, height - 1 - rows, width - 1 - cols])
    alarms = normal & (scores > threshold)
    inner = max(height - 2 * margin, 0) * max(width - 2 * margin, 0)
    return ImageErrors(
        per_type=per_type,
        false_alarms=int(alarms.sum()),
        false_alarms_at_border=float((border_distance[alarms] < margin).mean())
        if alarms.any()
        else math.nan,
        border_band_area=1 - inner / (height * width),
    )


def print_errors(errors: ImageErrors, quantile: float, margin: int) -> None:
    print(f"{'defect type':>12} " + " ".join(f"{c:>23}" for c in COLUMNS))
    for name, row in errors.per_type.items():
        cells = f"{row.images:>23.0f} {row.image_auroc:>23.4f} {row.share_of_loss:>23.3f}"
        cells += f" {row.missed:>23.3f} {row.missed_peak_on_defect:>23.3f}"
        print(f"{name:>12} {cells}")
    print(
        f"missed: at or below the normal images' {quantile:g} quantile; "
        f"{errors.false_alarms} normal images above it, "
        f"{errors.false_alarms_at_border:.3f} of them peaking within {margin} px of the border "
        f"(that band is {errors.border_band_area:.3f} of the image)"
    )


def _mean_of_defined(values: list[float]) -> float:
    defined = [value for value in values if not math.isnan(value)]
    return float(np.mean(defined)) if defined else math.nan


def mean_errors(runs: list[ImageErrors]) -> ImageErrors:
    """The mean of each figure over runs (NaN cells are left out of their mean)."""
    per_type = {
        name: TypeErrors(
            *(
                _mean_of_defined([run.per_type[name][i] for run in runs if name in run.per_type])
                for i in range(len(TypeErrors._fields))
            )
        )
        for name in dict.fromkeys(name for run in runs for name in run.per_type)
    }
    return ImageErrors(
        per_type=per_type,
        false_alarms=round(np.mean([run.false_alarms for run in runs])),
        false_alarms_at_border=_mean_of_defined([run.false_alarms_at_border for run in runs]),
        border_band_area=runs[0].border_band_area,
    )


def worst_images(
    names: list[str], scores: np.ndarray, maps: np.ndarray, labels: np.ndarray, count: int
) -> None:
    where = peaks(maps)
    order = np.argsort(scores, kind="stable")
    lowest = [i for i in order if labels[i] == 1][:count]
    highest = [i for i in order[::-1] if labels[i] == 0][:count]
    for title, chosen in (("lowest anomalous", lowest), ("highest normal", highest)):
        print(f"  {title} images (score, peak row and column):")
        for i in chosen:
            print(f"    {scores[i]:.4f}  ({where[i][0]:>3}, {where[i][1]:>3})  {names[i]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument(
        "--quantile",
        type=float,
        default=0.95,
        help="normal-score quantile an anomalous image must beat (0.95: 5 %% false alarms)",
    )
    parser.add_argument(
        "--margin", type=int, default=16, help="pixels that count as on a defect or a border"
    )
    parser.add_argument("--list", type=int, default=0, help="worst images of each kind to name")
    args = parser.parse_args(argv)
    if not 0.0 < args.quantile < 1.0:
        parser.error(f"--quantile must be in (0, 1), got {args.quantile}")
    if args.margin < 1:
        parser.error(f"--margin must be >= 1, got {args.margin}")
    if args.list < 0:
        parser.error(f"--list must be >= 0, got {args.list}")
    resolved = [path.resolve() for path in args.checkpoints]
    if len(set(resolved)) < len(resolved):
        parser.error("a checkpoint is given twice: " + " ".join(map(str, args.checkpoints)))
    runs = []
    for path in args.checkpoints:
        model, config, split = load_run(parser, path)
        maps = probabilities(model, standardised_maps(model, split, config.image_size, None))
        scores = model.image_score(maps).numpy()
        maps = maps.numpy()
        labels = np.array([record.label for record in split.test])
        if labels.all() or not labels.any():
            parser.error(f"{str(path)!r}: its test set needs normal and anomalous images")
        masks = load_test_masks(split, config.image_size) > 0.5
        types = [record.defect_type for record in split.test]
        errors = image_errors(scores, maps, masks, labels, types, args.quantile, args.margin)
        runs.append(errors)
        print(f"\n{path}")
        print_errors(errors, args.quantile, args.margin)
        if args.list:
            names = [Path(record.image).name for record in split.test]
            worst_images(names, scores, maps, labels, args.list)
    if len(runs) > 1:
        print(f"\nmean of {len(runs)} checkpoints")
        print_errors(mean_errors(runs), args.quantile, args.margin)


if __name__ == "__main__":
    main()
