"""Training and evaluation glue around the bare ``PRN`` module.

One ``TrainConfig`` describes a run. ``run(config, out_dir)`` reads the dataset, draws the
few-shot split, fits the prototypes, trains on a fixed step schedule (no model selection
on the test set), evaluates once at the end and writes ``metrics.json``, ``summary.md`` and
heatmap overlays; ``config.json``, ``manifest.json`` and ``recipe.json`` are written as the
run starts.
Checkpoints are written atomically and hold everything needed to resume on the CPU as if
uninterrupted (bit-exact where runs are: with one thread; docs/prn.md, "Reproducibility").
Under ``torchrun`` the run is data-parallel (DDP; NCCL on GPU, gloo on CPU) with the batch
sharded across ranks.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re
import shlex
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

import anomgen
from anomgen import AnomalyPool, AnomalyTransform, SynthesisDataset, from_dict
from anomgen.core import check_seed
from anomgen.functional.band import EDGE_SIDES
from anomgen.preview import save_png_atomic
from anomgen.transforms import (
    Compose,
    Crack,
    CutPaste,
    CutPasteScar,
    EdgeBandPaste,
    LocalCorruption,
    Normal,
    OneOf,
    PerlinTexturePaste,
    PoissonPatch,
    RealAnomalyImage,
    SeenAnomalyPaste,
)
from anomgen.transforms.seen import POSITIONS
from prn_model.atomic import staged_file, write_text_atomic
from prn_model.backbones import FEATURE_STRIDES
from prn_model.data import (
    SPLIT_UNITS,
    Record,
    Split,
    group_key,
    image_channels,
    load_image,
    load_records,
    make_split,
    read_folder,
    read_mtd,
    read_mvtec,
)
from prn_model.demo_data import build_demo_dataset
from prn_model.devices import checked_device
from prn_model.loss import PRNLoss
from prn_model.metrics import METRIC_NAMES, evaluate
from prn_model.network import PRN, PRNConfig
from prn_model.peak_memory import peak_rss_mib
from prn_model.visualize import heatmap_overlay

__all__ = [
    "CHECKPOINT_VERSION",
    "TrainConfig",
    "checkout_commit",
    "load_checkpoint",
    "run",
    "run_environment",
]

CHECKPOINT_VERSION = 1
DATASETS = ("demo", "mvtec", "mtd", "folder")
# TrainConfig.encoder_from_stride: 0 keeps the encoder frozen (PRN), else PRN.unfreeze_encoder's.
ENCODER_FROM_STRIDES = (0, 8, 16, 32)
# Simulated-anomaly strategies a run can mix (``TrainConfig.simulated``), in equal shares.
# "texture" pastes from --textures (DTD), or from the image itself when none are given;
# "self_texture" always pastes an augmented copy of the image itself; "band" replaces a
# band from one image edge with the mirrored, altered image (region-level texture change);
# "crack" draws long thin dark lines heading crack_angle degrees (90: down the image).
_SIMULATIONS: dict[str, Callable[[TrainConfig], AnomalyTransform]] = {
    "texture": lambda config: PerlinTexturePaste(textures=config.textures),
    "self_texture": lambda config: PerlinTexturePaste(textures=None),
    "scar": lambda config: CutPasteScar(),
    "cutpaste": lambda config: CutPaste(),
    "poisson": lambda config: PoissonPatch(),
    "corruption": lambda config: LocalCorruption(),
    "crack": lambda config: Crack(angle=tuple(config.crack_angle)),
    "band": lambda config: EdgeBandPaste(sides=tuple(config.band_sides)),
}
SIMULATION_STRATEGIES = tuple(_SIMULATIONS)
# TrainConfig's weights of the training mix's parts (build_transform).
_MIX_WEIGHTS = (
    "normal_weight",
    "seen_weight",
    "simulated_weight",
    "original_weight",
    "augmented_original_weight",
)
# TrainConfig's paths; run() stores them absolute, older checkpoints may hold them relative.
FOLDER_FIELDS = ("root", "normal_dir", "anomaly_dir", "mask_dir", "textures")
# The location fields each dataset reads; a location it would ignore is refused, so that
# e.g. --root without --dataset mtd cannot quietly train on the demo data.
LOCATION_FIELDS = ("root", "category", "normal_dir", "anomaly_dir", "mask_dir")
DATASET_LOCATIONS = {
    "demo": (),
    "mvtec": ("root", "category"),
    "mtd": ("root",),
    "folder": ("normal_dir", "anomaly_dir", "mask_dir"),
}
FILE_FIELDS = ("weights", "recipe")
PATH_FIELDS = FOLDER_FIELDS + FILE_FIELDS
# Keys that may differ between an interrupted run and its resumption.
_RESUMABLE_KEYS = {"checkpoint_every", "num_workers", "device", "stop_at_step"}
# DDP's stride warning for a (C, 1, kh, kw) gradient (re.match, DOTALL: the message spans lines).
_DEPTHWISE_STRIDES_WARNING = (
    r"(?s)Grad strides do not match bucket view strides.*grad\.sizes\(\) = \[\d+, 1, \d+, \d+\]"
)
# The folder holding prn_model/ and anomgen/: a git checkout when installed editable.
_CHECKOUT = Path(__file__).resolve().parents[1]
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # SHA-1 or SHA-256 object names


@dataclass
class TrainConfig:
    """Everything that defines a run; plain types so it is stored in checkpoints as a dict."""

    dataset: str = "demo"
    root: str | None = None
    category: str | None = None
    normal_dir: str | None = None
    anomaly_dir: str | None = None
    mask_dir: str | None = None
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    weights: str | None = None
    image_size: int = 128
    n_anomalies: int = 10
    split_by: str = "image"
    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-5
    seed: int = 0
    textures: str | None = None
    recipe: str | None = None
    normal_weight: float = 2.0
    seen_weight: float = 1.0
    simulated_weight: float = 1.0
    original_weight: float = 0.0
    augmented_original_weight: float = 0.0
    seen_blend: str = "paste"
    seen_position: str = "random"
    seen_rotation: list[float] = field(default_factory=lambda: [-90.0, 90.0])
    simulated: list[str] = field(default_factory=lambda: ["texture", "scar"])
    band_sides: list[str] = field(default_factory=lambda: list(EDGE_SIDES))
    crack_angle: list[float] = field(default_factory=lambda: [0.0, 180.0])
    use_residuals: bool = True
    prototype_ratio: float = 0.1
    prototype_share: float = 1.0
    prototype_matching: str = "image"
    patch_prototypes: int = 512
    attention_divisors: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    top_k: int = 100
    memory_bank_size: int = 0
    memory_bank_weight: float = 0.5
    intensity_normalisation: str = "none"
    # Encoder fine-tuning (0: PRN's frozen encoder): train the encoder from the map at this
    # stride on, at encoder_lr_scale x lr; when that changes prototyped maps, refit the
    # prototypes every prototype_refit_every steps and train the head alone on the final ones
    # for the last head_only_steps (docs/prn.md, "Fine-tuning the encoder").
    encoder_from_stride: int = 0
    encoder_lr_scale: float = 0.1
    prototype_refit_every: int = 300
    head_only_steps: int = 200
    checkpoint_every: int = 100
    num_workers: int = 0
    device: str = "auto"
    heatmaps: int = 6
    stop_at_step: int | None = None  # simulate an interrupted run (tests, debugging)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        for name in ("steps", "batch_size", "image_size", "checkpoint_every"):
            _check_int(name, getattr(self, name), 1)
        for name in ("n_anomalies", "num_workers", "heatmaps"):
            _check_int(name, getattr(self, name), 0)
        self.seed = check_seed(self.seed)  # anomgen's rule: an int in [0, 2**64)
        if self.stop_at_step is not None:
            _check_int("stop_at_step", self.stop_at_step, 1, self.steps)
        self.lr = _check_number("lr", self.lr, positive=True)
        if self.encoder_from_stride not in ENCODER_FROM_STRIDES:
            raise ValueError(
                f"encoder_from_stride must be one of {ENCODER_FROM_STRIDES}, "
                f"got {self.encoder_from_stride!r}"
            )
        self.encoder_lr_scale = _check_number(
            "encoder_lr_scale", self.encoder_lr_scale, positive=True
        )
        _check_int("prototype_refit_every", self.prototype_refit_every, 1)
        # A run that refits prototypes ends with a head-only tail (the head must learn the final
        # prototypes), which must leave steps before it; other runs have none.
        if self.refits_prototypes:
            _check_int("head_only_steps", self.head_only_steps, 1, self.steps - 1)
        else:
            _check_int("head_only_steps", self.head_only_steps, 0)
        self.weight_decay = _check_number("weight_decay", self.weight_decay)
        for name in ("pretrained", "use_residuals"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not isinstance(self.device, str) or not _is_training_device(self.device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        divisors = self.attention_divisors
        if (
            isinstance(divisors, int | str)
            or not divisors
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in divisors)
        ):
            raise ValueError(f"attention_divisors must be positive ints, got {divisors!r}")
        self.attention_divisors = list(divisors)
        # A repeated strategy gets two shares of the mix; a repeated side would mean nothing.
        self.simulated = _names("simulated", self.simulated, SIMULATION_STRATEGIES, distinct=False)
        self.band_sides = _names("band_sides", self.band_sides, EDGE_SIDES, distinct=True)
        if self.seen_blend not in ("paste", "poisson"):
            raise ValueError(f"seen_blend must be 'paste' or 'poisson', got {self.seen_blend!r}")
        if self.seen_position not in POSITIONS:
            raise ValueError(
                f"seen_position must be one of {POSITIONS}, got {self.seen_position!r}"
            )
        self.seen_rotation = _degree_range("seen_rotation", self.seen_rotation)
        self.crack_angle = _degree_range("crack_angle", self.crack_angle)
        for name in _MIX_WEIGHTS:
            setattr(self, name, _check_number(name, getattr(self, name)))
        # Without few-shot anomalies only the normal and simulated parts are drawn.
        drawn = _MIX_WEIGHTS if self.n_anomalies else ("normal_weight", "simulated_weight")
        if not self.recipe and not any(getattr(self, name) > 0 for name in drawn):
            weights = {name: getattr(self, name) for name in drawn}
            raise ValueError(f"the mix weights must not all be 0, got {weights}")
        share = self.prototype_share
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
            raise ValueError(f"prototype_share must be in (0, 1], got {share!r}")
        if self.split_by not in SPLIT_UNITS:
            raise ValueError(f"split_by must be one of {SPLIT_UNITS}, got {self.split_by!r}")
        if self.dataset in ("mvtec", "mtd") and not self.root:
            raise ValueError(f"dataset {self.dataset!r} needs --root")
        if self.dataset == "mvtec" and not self.category:
            raise ValueError("dataset 'mvtec' needs --category")
        if self.dataset == "folder" and not self.normal_dir:
            raise ValueError("dataset 'folder' needs --normal-dir")
        if self.category is not None and not (isinstance(self.category, str) and self.category):
            raise ValueError(f"category must be a non-empty string, got {self.category!r}")
        unread = [
            name
            for name in LOCATION_FIELDS
            if getattr(self, name) is not None and name not in DATASET_LOCATIONS[self.dataset]
        ]
        if unread:
            given = ", ".join(f"{name}={getattr(self, name)!r}" for name in unread)
            raise ValueError(
                f"dataset {self.dataset!r} does not read {given}; choose the dataset those "
                f"belong to (e.g. --dataset mtd for an MTD root) or leave them out"
            )
        for name in FOLDER_FIELDS:
            _check_path(name, getattr(self, name), folder=True)
        for name in FILE_FIELDS:
            _check_path(name, getattr(self, name), folder=False)
        if self.weights is not None and not self.pretrained:
            raise ValueError(f"weights {self.weights!r} contradicts pretrained=False")
        self.model_config()  # the network's own checks, before any data is read

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_absolute_paths(self) -> TrainConfig:
        """This config with its folders and files absolute, as runs store it: a checkpoint
        names the same data when re-scored or resumed from another working folder."""
        return dataclasses.replace(
            self,
            **{
                key: str(Path(value).expanduser().resolve())
                for key in PATH_FIELDS
                if (value := getattr(self, key)) is not None
            },
        )

    @property
    def refits_prototypes(self) -> bool:
        """Whether the fine-tuned encoder blocks feed prototyped maps (strides 4 to 16)."""
        deepest = FEATURE_STRIDES[PRNConfig.n_prototype_scales - 1]
        return 0 < self.encoder_from_stride <= deepest

    def model_config(self) -> PRNConfig:
        """The network this run trains (the zoo checks its entries against this)."""
        return PRNConfig(
            backbone=self.backbone,
            image_size=self.image_size,
            top_k=self.top_k,
            use_residuals=self.use_residuals,
            prototype_ratio=self.prototype_ratio,
            prototype_matching=self.prototype_matching,
            patch_prototypes=self.patch_prototypes,
            attention_divisors=tuple(self.attention_divisors),
            memory_bank_size=self.memory_bank_size,
            memory_bank_weight=self.memory_bank_weight,
            intensity_normalisation=self.intensity_normalisation,
        )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}")
        return cls(**values)


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    """An int option in [low, high]: a float is not truncated, nor a string parsed, nor a
    bool taken for 0 or 1."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an int {bounds}, got {value!r}")


def _check_number(name: str, value: Any, positive: bool = False) -> float:
    """A finite number >= 0 (> 0 if ``positive``) as a float; ints count (JSON writes 1.0 as 1)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not math.isfinite(value))
        or value < 0
        or (positive and value == 0)
    ):
        what = "a positive number" if positive else "a number >= 0"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return float(value)


def _check_path(name: str, value: Any, folder: bool) -> None:
    """A path the user gave must exist before the run starts, not fail after its folder was made
    (a missing texture folder would only show when the first texture is drawn)."""
    if value is None:
        return
    kind = "folder" if folder else "file"
    path = Path(value) if isinstance(value, str) and value else None
    if path is None or not (path.is_dir() if folder else path.is_file()):
        raise ValueError(f"{name} must be an existing {kind}, got {value!r}")


def _names(key: str, values: Any, known: Sequence[str], distinct: bool) -> list[str]:
    """``values`` as a list, checked to be a non-empty sequence of names among ``known``."""
    if (
        isinstance(values, str)
        or not isinstance(values, Sequence)
        or not values
        or any(value not in known for value in values)
        or (distinct and len(set(values)) != len(values))
    ):
        what = "distinct names" if distinct else "names"
        raise ValueError(f"{key} must be {what} among {tuple(known)}, got {values!r}")
    return list(values)


def _degree_range(key: str, value: Any) -> list[float]:
    """``value`` as ``[min, max]`` floats, checked to be degrees in [-360, 360]."""
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        or not -360 <= value[0] <= value[1] <= 360
    ):
        raise ValueError(f"{key} must be [min, max] degrees in [-360, 360], got {value!r}")
    return [float(v) for v in value]


# ----------------------------------------------------------------------------- distributed


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> _Dist:
    """Join the torchrun process group when launched by torchrun, else run alone."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return _Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size())


def _is_training_device(name: str) -> bool:
    """Whether ``name`` spells a device training supports (this machine may still lack it)."""
    if name == "auto":
        return True
    try:
        return torch.device(name).type in ("cpu", "cuda")
    except RuntimeError:
        return False


def _resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = checked_device(name)
    if device.type == "cuda":
        if device.index is None:
            count = torch.cuda.device_count()
            if local_rank >= count:  # torch's own error comes from deep inside set_device
                raise ValueError(
                    f"process LOCAL_RANK {local_rank} has no GPU: this machine has {count} "
                    f"CUDA device(s); start at most {count} torchrun processes per node"
                )
            device = torch.device("cuda", local_rank)
        elif int(os.environ.get("WORLD_SIZE", 1)) > 1:
            raise ValueError(
                f"--device {name!r} names one GPU, but torchrun starts several processes; "
                "use --device cuda (each process takes the GPU of its LOCAL_RANK)"
            )
        torch.cuda.set_device(device)
    return device


# ----------------------------------------------------------------------------------- data


def read_records(config: TrainConfig, cache_dir: Path) -> list[Record]:
    """The dataset's records; the demo dataset is built on first use under ``cache_dir``."""
    if config.dataset == "demo":
        try:
            root = build_demo_dataset(cache_dir / "demo_data", seed=0)
        except OSError as error:
            raise OSError(
                f"cannot build the demo data in {str(cache_dir)!r} (beside the output folder): "
                f"{error}"
            ) from None
        return read_mvtec(root, "demo_texture")
    if config.dataset == "mvtec":
        return read_mvtec(config.root, config.category)
    if config.dataset == "mtd":
        return read_mtd(config.root)
    return read_folder(config.normal_dir, config.anomaly_dir, config.mask_dir)


def config_split(config: TrainConfig, records: Sequence[Record]) -> Split:
    """The few-shot split a run with ``config`` trains on and is scored on; it must leave
    both normal and anomalous test images, without which every metric is undefined."""
    split = make_split(
        records, n_anomalies=config.n_anomalies, seed=config.seed, split_by=config.split_by
    )
    labels = {record.label for record in split.test}
    if 0 not in labels:
        raise ValueError("the test set has no normal images; the split leaves none to score")
    if 1 not in labels:
        n_anomalies = sum(record.label for record in records)
        raise ValueError(
            f"the test set has no anomalous images left: all {n_anomalies} anomalies are "
            f"few-shot samples ({len(split.few_shot)}), their held-out twins or unusable; "
            "lower --n-anomalies"
        )
    return split


def prototype_rows(split: Split, share: float, seed: int) -> list[int]:
    """Indices into ``split.train_normal`` of the images the prototypes are fitted on.

    ``share`` 1 takes every image (the paper). Below 1 it takes the images of a seeded ``share``
    of the normal training tiles (``Record.group``; an image without one is its own tile): the
    head then also trains on normal tiles that no prototype was fitted on, as every test tile is
    when the split is by tile (docs/results.md, "Prototypes from half of the tiles").
    """
    if share >= 1:
        return list(range(len(split.train_normal)))
    keys = [group_key(r) for r in split.train_normal]
    tiles = sorted(set(keys), key=str)
    random.Random(seed).shuffle(tiles)
    chosen = set(tiles[: max(1, round(share * len(tiles)))])
    return [row for row, key in enumerate(keys) if key in chosen]


def build_transform(config: TrainConfig, split: Split) -> AnomalyTransform:
    """The training mix: normal images, seen-anomaly extension, simulated anomalies and, with
    ``original_weight`` > 0, the few-shot anomalous images themselves and, with
    ``augmented_original_weight`` > 0, those images with a seen or simulated anomaly added on
    top (their masks joined): more of the defective parts' own ground labelled normal, each
    time beside a fresh anomaly.

    ``config.recipe`` (a YAML/JSON anomgen config) replaces the default mix.
    """
    if config.recipe:
        import yaml

        try:
            recipe = yaml.safe_load(Path(config.recipe).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:  # else a codec message naming no file
            raise ValueError(f"recipe {config.recipe!r} cannot be read as text: {error}") from None
        except yaml.YAMLError as error:  # one line: the fault and where it is
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            reason = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise ValueError(
                f"recipe {config.recipe!r} is not valid YAML: {reason}{where}"
            ) from None
        try:
            return from_dict(recipe)
        except ValueError as error:
            raise ValueError(f"recipe {config.recipe!r}: {error}") from None
    simulated = OneOf([_SIMULATIONS[name](config) for name in config.simulated])
    if not split.few_shot:
        return OneOf([Normal(), simulated], weights=[config.normal_weight, config.simulated_weight])
    pool = AnomalyPool(
        [str(r.image) for r in split.few_shot], [str(r.mask) for r in split.few_shot]
    )
    seen = SeenAnomalyPaste(
        anomalies=pool,
        blend=config.seen_blend,
        position=config.seen_position,
        rotation=tuple(config.seen_rotation),
    )
    parts = [Normal(), seen, simulated]
    weights = [config.normal_weight, config.seen_weight, config.simulated_weight]
    if config.original_weight > 0:
        parts.append(RealAnomalyImage(anomalies=pool))
        weights.append(config.original_weight)
    if config.augmented_original_weight > 0:
        parts.append(Compose([RealAnomalyImage(anomalies=pool), OneOf([seen, simulated])]))
        weights.append(config.augmented_original_weight)
    return OneOf(parts, weights=weights)


def training_dataset(
    config: TrainConfig, split: Split, transform: AnomalyTransform
) -> tuple[int, SynthesisDataset]:
    """The run's input channel count and its synthesis dataset over the normal training images.

    One channel count for every image of the run (what exports should expect, too).
    """
    channels = image_channels([*split.train_normal, *split.few_shot, *split.test])
    dataset = SynthesisDataset(
        [load_image(r.image, config.image_size, channels == 1) for r in split.train_normal],
        transform,
        seed=config.seed,
    )
    return channels, dataset


class _StepBatches:
    """Batch sampler yielding the (index, epoch) pairs of each step from ``start`` on.

    Epoch ``e`` visits the images in a permutation seeded by (seed, e); step ``s`` takes
    the next ``batch_size`` of them, and rank ``r`` of ``world`` keeps every world-th item.
    The pairs depend only on the step, so a resumed run sees exactly the same data.
    """

    def __init__(self, n: int, batch_size: int, steps: int, start: int, seed: int, dist_: _Dist):
        self.n, self.batch_size, self.steps, self.start = n, batch_size, steps, start
        self.seed, self.dist = seed, dist_

    def __len__(self) -> int:
        return self.steps - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per_epoch = max(1, self.n // self.batch_size)
        for step in range(self.start, self.steps):
            epoch, offset = divmod(step, per_epoch)
            order = torch.randperm(
                self.n,
                generator=torch.Generator().manual_seed(anomgen.derive_seed(self.seed, epoch)),
            )
            picks = [
                int(order[(offset * self.batch_size + j) % self.n]) for j in range(self.batch_size)
            ]
            yield [(i, epoch) for i in picks[self.dist.rank :: self.dist.world]]


def _collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {
        "image": torch.stack([item["image"] for item in items]),
        "mask": torch.stack([item["mask"] for item in items]),
    }


# ----------------------------------------------------------------------------- checkpoints


def _save_atomic(payload: dict[str, Any], path: Path) -> None:
    """torch.save through a staged file: never a half-written checkpoint."""
    with staged_file(path) as tmp:
        torch.save(payload, tmp)


def nan_to_none(value: Any) -> Any:
    """Undefined metrics are NaN; JSON has no NaN, so they are written as null."""
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_to_none(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by the recipe (``weights_only=True``) and check its version."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(f"cannot read checkpoint {str(path)!r}: {error}") from None
    version = payload.get("version") if isinstance(payload, dict) else None
    if version != CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint {str(path)!r} has format version {version!r}; "
            f"this prn_model reads version {CHECKPOINT_VERSION}"
        )
    return payload


def _check_same_run(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    # Options added since the checkpoint was written take their defaults. A relative path
    # (checkpoints written before paths were stored absolute) names the same folder as its
    # absolute form when resumed from the same working folder.
    try:
        saved = TrainConfig.from_dict(saved).with_absolute_paths().to_dict()
    except ValueError as error:  # e.g. a folder it names is gone
        raise ValueError(
            f"checkpoint {str(path)!r} was written by a configuration that is not valid here "
            f"({error}); use a new --out directory"
        ) from None
    current = config.with_absolute_paths().to_dict()
    differing = sorted(
        k
        for k in set(saved) | set(current)
        if k not in _RESUMABLE_KEYS and saved.get(k) != current.get(k)
    )
    if differing:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in differing)
        raise ValueError(
            f"checkpoint {str(path)!r} was written by another configuration ({details}); "
            "use a new --out directory or the same options"
        )


# ------------------------------------------------------------------------------- training


# What a run writes into its folder; ``overwrite`` removes these before starting afresh.
RUN_OUTPUTS = (
    "checkpoint.pt",
    "metrics.json",
    "summary.md",
    "manifest.json",
    "recipe.json",
    "config.json",
    "command.txt",
)


def run(
    config: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    command: str | None = None,
) -> dict[str, Any] | None:
    """Train and evaluate; returns the metrics on rank 0 (None on other ranks).

    A folder that already holds a run (a checkpoint or metrics) is refused unless ``resume``
    continues its checkpoint or ``overwrite`` replaces it (its outputs are removed first),
    so a finished run is never destroyed or mixed with another one's files by accident.
    ``config.json`` holds ``config`` from the start, so the options survive a lost
    checkpoint; ``command`` (the command line, from ``prn-train``) goes to ``command.txt``.
    """
    out = Path(out_dir)
    _check_out_dir(out, resume, overwrite)
    config = config.with_absolute_paths()
    device = _resolve_device(config.device, int(os.environ.get("LOCAL_RANK", 0)))
    dist_ = _init_distributed(device)
    try:
        if config.batch_size % dist_.world:  # each process takes an equal share; say so early
            raise ValueError(
                f"batch_size {config.batch_size} must be divisible by the {dist_.world} processes"
            )
        return _run(config, out, resume, overwrite, command, device, dist_)
    finally:
        if dist_.world > 1:
            dist.destroy_process_group()


def _check_out_dir(out: Path, resume: bool, overwrite: bool) -> None:
    if resume and overwrite:  # which one wins would depend on whether a checkpoint exists
        raise ValueError("resume and overwrite exclude each other")
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {str(out)!r} is a file")
    resumable = resume and (out / "checkpoint.pt").is_file()
    holds_run = (out / "checkpoint.pt").exists() or (out / "metrics.json").exists()
    if holds_run and not resumable and not overwrite:
        raise ValueError(
            f"{str(out)!r} already holds a run (checkpoint.pt or metrics.json): pass --resume "
            "to continue it, --overwrite to replace it, or choose another --out"
        )


def _record_run(
    out: Path, config: TrainConfig, command: str | None, resuming: bool, world: int
) -> None:
    """Write ``config.json`` and add ``command`` to ``command.txt`` as the run starts.

    A resumption has passed ``_check_same_run``, so its config differs at most in the
    resumable keys, and rewriting the file keeps the latest of those; its command line is
    added below the earlier ones. A fresh run's ``command.txt`` holds its own line only.
    """
    write_text_atomic(out / "config.json", json.dumps(config.to_dict(), indent=2))
    if command is None:
        return
    line = f"cd {shlex.quote(os.getcwd())} && {command}"
    if world > 1:
        line += f"  # under torchrun, {world} processes"
    path = out / "command.txt"
    earlier = path.read_text() if resuming and path.is_file() else ""
    write_text_atomic(path, earlier + line + "\n")


def _clear_run(out: Path) -> None:
    """Remove a previous run's outputs, so none of them is mistaken for this run's."""
    for name in RUN_OUTPUTS:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "heatmaps", ignore_errors=True)


def _run(
    config: TrainConfig,
    out: Path,
    resume: bool,
    overwrite: bool,
    command: str | None,
    device: torch.device,
    dist_: _Dist,
) -> dict[str, Any] | None:
    checkpoint_path = out / "checkpoint.pt"
    resuming = resume and checkpoint_path.is_file()
    if dist_.main and resume and not resuming:
        print(f"prn_model.train: no checkpoint in {str(out)!r}; starting afresh", file=sys.stderr)
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    earlier_seconds = 0.0  # training time of the processes this run resumes

    # Rank 0 first: it may build the demo dataset, which the others then only read.
    if dist_.main:
        records = read_records(config, out.parent / ".cache")
    if dist_.world > 1:
        dist.barrier()
    if not dist_.main:
        records = read_records(config, out.parent / ".cache")
    split = config_split(config, records)
    transform = build_transform(config, split)
    channels, dataset = training_dataset(config, split, transform)
    model_config = config.model_config()
    start, payload = 0, None
    if resuming:
        payload = load_checkpoint(checkpoint_path)
        _check_same_run(payload["config"], config, checkpoint_path)
        model_config = PRNConfig.from_dict(payload["model_config"])
    # On the training device before anything is fitted or loaded: prototype fitting then runs
    # on the GPU, and a resumed optimizer's state lands beside the parameters it belongs to.
    model = PRN(model_config, pretrained=config.pretrained, weights_path=config.weights)
    model.input_channels = channels
    model.to(device)
    # Only now, with data and weights in hand: a run that cannot start leaves no empty folder,
    # and --overwrite removes the old run only for one that can.
    if dist_.main:
        out.mkdir(parents=True, exist_ok=True)
        if overwrite and not resuming:
            _clear_run(out)
        _record_run(out, config, command, resuming, dist_.world)
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine(config.steps))
    # Refitting needs the prototypes' images again, also in a resumed run.
    normals = None
    if payload is None or config.refits_prototypes:
        rows = prototype_rows(split, config.prototype_share, config.seed)
        normals = torch.stack([dataset.load(row) for row in rows])
    if payload is not None:
        # The scheduler exists before the optimizer state is loaded: creating it resets lr.
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        torch.set_rng_state(payload["rng"]["torch"])
        start = int(payload["step"])
        # Checkpoints written before train_seconds was stored lack it: only new time counts.
        earlier_seconds = float(payload.get("train_seconds", 0.0))
    else:
        model.fit_prototypes(normals, n_images=len(normals), seed=config.seed)
    head_only_from = config.steps - config.head_only_steps if config.refits_prototypes else None
    if head_only_from is not None and start > head_only_from:
        model.freeze_encoder()
    if dist_.main:
        write_text_atomic(out / "manifest.json", split.to_json())
        write_text_atomic(out / "recipe.json", json.dumps(transform.to_dict(), indent=2))

    if dist_.world > 1:
        if device.type == "cuda":
            # The head's BatchNorm then normalises over the global batch, as one process
            # would; gloo (CPU) has no SyncBatchNorm, so there each process uses its share.
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # CPU kernels return the depthwise convolutions' weight gradients (C, 1, 3, 3) with
        # another stride on the size-1 axis than the parameter: the same memory layout, yet
        # DDP warns once per rank. Only that case is silenced.
        warnings.filterwarnings("ignore", message=_DEPTHWISE_STRIDES_WARNING, category=UserWarning)

    def wrapped() -> torch.nn.Module:
        """The model under DDP (a new wrapper after a refit or the encoder's freeze: DDP
        registers parameters and buffers once, and its construction syncs them from rank 0)."""
        if dist_.world == 1:
            return model
        return DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    network = wrapped()
    criterion = PRNLoss()
    loader = DataLoader(
        dataset,
        batch_sampler=_StepBatches(
            len(dataset), config.batch_size, config.steps, start, config.seed, dist_
        ),
        collate_fn=_collate,
        num_workers=config.num_workers,
        # Its own generator for the workers' base seed: drawn from the global RNG, it would
        # advance that once more on every resumption, off the uninterrupted run's state.
        generator=torch.Generator().manual_seed(config.seed),
    )
    use_amp = device.type == "cuda"
    model.train()
    progress = tqdm(
        total=config.steps, initial=start, desc="train", unit="step", disable=not dist_.main
    )
    # The run's training time as its last checkpoint records it: a finished run that is only
    # re-evaluated keeps its figure.
    step, train_seconds = start, earlier_seconds

    def save_checkpoint() -> float:
        """Write the checkpoint of ``step``; returns the training time it records."""
        seconds = earlier_seconds + time.perf_counter() - started
        _save_checkpoint(
            checkpoint_path, model, optimizer, scheduler, step, config, transform, channels, seconds
        )
        return seconds

    for batch in loader:
        if head_only_from is not None and _refit_due(step, head_only_from, config):
            if step == head_only_from:
                model.freeze_encoder()
            model.fit_prototypes(normals, n_images=len(normals), seed=config.seed)
            network = wrapped()
        images = batch["image"].to(device, non_blocking=True)
        masks = batch["mask"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = network(images)
        loss, parts = criterion(logits.float(), masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        progress.update(1)
        progress.set_postfix(loss=f"{loss.item():.4f}", lr=f"{scheduler.get_last_lr()[0]:.1e}")
        if dist_.main and (step % config.checkpoint_every == 0 or step == config.steps):
            train_seconds = save_checkpoint()
        if config.stop_at_step is not None and step >= config.stop_at_step:
            progress.close()
            return None
    progress.close()
    model.freeze_encoder()  # from stride 32 it trained to the end
    fingerprints = _rank_fingerprints(model, dist_)
    if not dist_.main:
        return None
    if model.memory_bank is not None and not model.memory_bank.is_fitted:
        _fit_memory_bank(model, dataset, config)
        train_seconds = save_checkpoint()
    metrics = evaluate_split(model, split, config, device, out)
    metrics["train_seconds"] = round(train_seconds, 1)
    metrics["peak_rss_mib"] = peak_rss_mib()
    metrics["world_size"] = dist_.world
    metrics["rank_fingerprints"] = fingerprints
    metrics["environment"] = run_environment(device)
    write_text_atomic(out / "metrics.json", json.dumps(nan_to_none(metrics), indent=2))
    write_text_atomic(out / "summary.md", _summary(metrics, config, split))
    return metrics


def _optimizer(model: PRN, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the head and, when ``config`` fine-tunes the encoder, over the encoder
    blocks it unfreezes here, at their own rate."""
    groups: list[dict[str, Any]] = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    if config.encoder_from_stride:
        encoder = model.unfreeze_encoder(config.encoder_from_stride)
        groups.append({"params": encoder, "lr": config.lr * config.encoder_lr_scale})
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def _refit_due(step: int, head_only_from: int, config: TrainConfig) -> bool:
    """Whether the prototypes are refitted before training step ``step`` (from 0): every
    ``prototype_refit_every`` steps, and once more as the head-only tail starts."""
    every = config.prototype_refit_every
    return step == head_only_from or (0 < step < head_only_from and step % every == 0)


def memory_bank_split(n_normal: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the normal training images for the memory bank (a seeded 90 %) and for its
    calibration (the other 10 %, at least one image)."""
    if n_normal < 2:
        raise ValueError(f"a memory bank needs at least 2 normal training images, got {n_normal}")
    order = torch.randperm(n_normal, generator=torch.Generator().manual_seed(seed))
    n_calibration = max(1, n_normal // 10)
    return order[n_calibration:], order[:n_calibration]


def _fit_memory_bank(model: PRN, dataset: SynthesisDataset, config: TrainConfig) -> None:
    bank, calibration = memory_bank_split(len(dataset), config.seed)

    def batches(indices: torch.Tensor) -> Iterator[torch.Tensor]:
        for chunk in indices.split(16):
            yield torch.stack([dataset.load(int(i)) for i in chunk])

    model.fit_memory_bank(batches(bank), batches(calibration), seed=config.seed, progress=True)


def _rank_fingerprints(model: PRN, dist_: _Dist) -> list[float]:
    """A checksum of the trained state from every rank; DDP replicas must agree exactly.

    DDP keeps parameters in step; BatchNorm running statistics follow each rank's own
    last batch, so rank 0's are broadcast first and every rank ends with the same model.
    """
    if dist_.world > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
    state = model.state_dict()
    local = torch.tensor(
        [sum(float(v.double().abs().sum()) for v in state.values() if v.is_floating_point())],
        dtype=torch.float64,
        device=next(iter(state.values())).device,
    )
    if dist_.world == 1:
        return [float(local)]
    gathered = [torch.zeros_like(local) for _ in range(dist_.world)]
    dist.all_gather(gathered, local)
    values = [float(g) for g in gathered]
    if len(set(values)) != 1:
        raise RuntimeError(f"DDP ranks disagree after training: state checksums {values}")
    return values


def _cosine(steps: int):
    """Cosine decay from the base learning rate to 0 over the fixed schedule."""

    def factor(step: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))

    return factor


def _save_checkpoint(
    path: Path,
    model: PRN,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    step: int,
    config: TrainConfig,
    transform: AnomalyTransform,
    channels: int,
    train_seconds: float,
) -> None:
    """``train_seconds``: the run's training time so far, which a resumption adds to."""
    _save_atomic(
        {
            "version": CHECKPOINT_VERSION,
            "step": step,
            "model": model.state_dict(),
            "model_config": model.config.to_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "config": config.to_dict(),
            "channels": channels,
            "train_seconds": train_seconds,
            "recipe": json.dumps(transform.to_dict()),
            "anomgen_version": anomgen.__version__,
        },
        path,
    )


def run_environment(device: torch.device) -> dict[str, Any]:
    """What a bit-exact re-run must share besides the seed (docs/prn.md, "Reproducibility").

    PyTorch's CPU kernels round differently per instruction set and thread count, so the
    package versions alone do not pin a run's last digits. Pillow decodes every image and
    scikit-image provides the demo data's texture. ``git_commit`` is the code's commit when
    it runs from a git checkout (an editable install), and absent otherwise.
    """
    import platform

    import PIL
    import skimage

    environment = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "pillow": PIL.__version__,
        "scikit_image": skimage.__version__,
        "anomgen": anomgen.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_threads": torch.get_num_threads(),
    }
    commit = checkout_commit(_CHECKOUT)
    if commit is not None:
        environment["git_commit"] = commit
    return environment


def checkout_commit(folder: Path) -> str | None:
    """The commit checked out in ``folder``, read from its ``.git`` (HEAD, then the loose or
    packed ref it names; a worktree's ``.git`` file is followed), or None when ``folder`` is
    no git checkout or its files say nothing readable. git itself is not run (it may be
    missing, or refuse a repository another user owns); uncommitted changes are not seen."""
    try:
        git = folder / ".git"
        if git.is_file():  # a worktree or submodule: "gitdir: PATH"
            text = git.read_text().strip()
            if not text.startswith("gitdir:"):
                return None
            git = folder / text.removeprefix("gitdir:").strip()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):  # a detached HEAD holds the commit itself
            return head if _COMMIT.fullmatch(head) else None
        ref = head.removeprefix("ref:").strip()
        # A worktree keeps its HEAD in its own folder and the refs in the common one.
        common = git / "commondir"
        folders = [git, git / common.read_text().strip()] if common.is_file() else [git]
        for place in folders:
            if (place / ref).is_file():
                commit = (place / ref).read_text().strip()
                return commit if _COMMIT.fullmatch(commit) else None
        for place in folders:
            if (place / "packed-refs").is_file():
                for line in (place / "packed-refs").read_text().splitlines():
                    fields = line.split()
                    if len(fields) == 2 and fields[1] == ref and _COMMIT.fullmatch(fields[0]):
                        return fields[0]
    except (OSError, UnicodeDecodeError):
        return None
    return None  # an unborn branch: no commit yet


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_split(
    model: PRN, split: Split, config: TrainConfig, device: torch.device, out: Path
) -> dict[str, Any]:
    """Metrics on the test set at ``image_size`` (masks resized with nearest neighbour)."""
    model.eval()
    grayscale = model.grayscale_input
    scores, maps, masks = [], [], []
    for start in tqdm(range(0, len(split.test), 16), desc="evaluate", unit="batch"):
        chunk = split.test[start : start + 16]
        images, chunk_masks = load_records(chunk, config.image_size, grayscale)
        probabilities = model.anomaly_map(images.to(device)).float()
        scores.append(model.image_score(probabilities).cpu())
        maps.append(probabilities[:, 0].cpu())
        masks.append(chunk_masks[:, 0])
    score = torch.cat(scores).numpy()
    all_maps, all_masks = torch.cat(maps).numpy(), torch.cat(masks).numpy()
    labels = np.array([r.label for r in split.test])
    types = [r.defect_type for r in split.test]
    metrics = evaluate(score, labels, all_maps, all_masks, types)
    _write_heatmaps(split.test, score, all_maps, all_masks, labels, config, out, grayscale)
    return metrics


def _write_heatmaps(
    records: Sequence[Record],
    scores: np.ndarray,
    maps: np.ndarray,
    masks: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    out: Path,
    grayscale: bool | None,
) -> None:
    """Heatmap overlays: best-detected and most-missed anomalies, and worst false alarms."""
    from PIL import Image

    folder = out / "heatmaps"
    folder.mkdir(exist_ok=True)
    anomalies = np.flatnonzero(labels == 1)
    normals = np.flatnonzero(labels == 0)
    groups = {
        "detected_anomalies": anomalies[np.argsort(-scores[anomalies])][: config.heatmaps],
        "missed_anomalies": anomalies[np.argsort(scores[anomalies])][: config.heatmaps],
        "false_alarms": normals[np.argsort(-scores[normals])][: config.heatmaps],
    }
    for name, indices in groups.items():
        if len(indices) == 0:
            continue
        rows = []
        for i in indices:
            image = load_image(records[i].image, config.image_size, grayscale)
            row = heatmap_overlay(image, maps[i], masks[i])
            cv2.putText(
                row,
                f"{records[i].defect_type} {scores[i]:.3f}",
                (4, 14),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.45,
                (255, 255, 0),
                1,
                cv2.LINE_AA,
            )
            rows.append(row)
        grid = np.concatenate(rows, axis=0)
        save_png_atomic(Image.fromarray(grid), folder / f"{name}.png")


def _summary(metrics: dict[str, Any], config: TrainConfig, split: Split) -> str:
    keys = METRIC_NAMES
    lines = [
        f"# PRN run: {config.dataset}" + (f" / {config.category}" if config.category else ""),
        "",
        f"backbone `{config.backbone}`, image size {config.image_size}, {config.steps} steps, "
        f"batch {config.batch_size}, seed {config.seed}, {len(split.few_shot)} real anomalies "
        f"(removed from the test set), {len(split.train_normal)} normal training images, "
        f"{len(split.test)} test images.",
        "",
        "| scope | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
        "| all | " + " | ".join(f"{metrics[k]:.4f}" for k in keys) + " |",
    ]
    for name, values in metrics.get("per_defect_type", {}).items():
        lines.append(f"| {name} | " + " | ".join(f"{values[k]:.4f}" for k in keys) + " |")
    lines += ["", f"Training took {metrics.get('train_seconds', 'n/a')} s.", ""]
    return "\n".join(lines)
