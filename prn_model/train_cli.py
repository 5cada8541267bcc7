"""Train and evaluate PRN in one command: ``prn-train`` (or ``python recipes/train_prn.py``).

With no options it builds the small offline demo dataset (scikit-image textures with
drawn defects) and trains the efficientnet_lite0 PRN on 2 CPU cores in about a minute.
``--model NAME`` starts from a zoo entry's settings (prn_model.zoo); options given beside it
override them, e.g. ``--model prn_lite0_mtd_normalised --root ../shared/data/mtd``.
``--config RUN/config.json`` starts from the settings of an earlier run instead, to re-run it.
Multi-GPU / multi-node: ``torchrun --nproc_per_node N -m prn_model.train_cli ...`` (or the recipe).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import typing
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from anomgen.functional.band import EDGE_SIDES
from anomgen.transforms.seen import POSITIONS
from prn_model.backbones import list_backbones
from prn_model.data import SPLIT_UNITS
from prn_model.network import INTENSITY_NORMALISATIONS, unknown_fields
from prn_model.prototypes import MATCHING_MODES
from prn_model.train import (
    DATASETS,
    ENCODER_FROM_STRIDES,
    SIMULATION_STRATEGIES,
    TrainConfig,
    run,
)
from prn_model.zoo import list_models, train_settings


def parse_args(
    argv: list[str] | None = None, prog: str = "prn-train"
) -> tuple[TrainConfig, Path, bool, bool]:
    """The run's config, its output folder, and the --resume and --overwrite switches."""
    # Two passes: --model (or --config, whose file is read once the options have parsed)
    # decides the defaults that every other option then overrides.
    model_parser = argparse.ArgumentParser(prog=prog, add_help=False)
    start = model_parser.add_mutually_exclusive_group()
    start.add_argument(
        "--model",
        choices=list_models(),
        metavar="NAME",
        help=f"zoo entry whose training settings the other options start from: {list_models()}",
    )
    start.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="an earlier run's config.json, whose settings the other options start from "
        "in place of those shown here: re-runs that run",
    )
    model = model_parser.parse_known_args(argv)[0].model
    defaults = SimpleNamespace(
        **(train_settings(model) if model else dataclasses.asdict(TrainConfig()))
    )
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train and evaluate the Prototypical Residual Network (PRN).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        parents=[model_parser],
    )
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default=defaults.dataset,
        help="demo: the offline synthetic data; mvtec, mtd or folder need --root or folders",
    )
    parser.add_argument(
        "--root", default=defaults.root, help="dataset root (MVTec AD folder or raw MTD folder)"
    )
    parser.add_argument(
        "--category", default=defaults.category, help="MVTec AD category, e.g. bottle"
    )
    parser.add_argument(
        "--normal-dir", default=defaults.normal_dir, help="folder dataset: normal images"
    )
    parser.add_argument(
        "--anomaly-dir", default=defaults.anomaly_dir, help="folder dataset: anomalous images"
    )
    parser.add_argument(
        "--mask-dir",
        default=defaults.mask_dir,
        help="folder dataset: masks (<name>.png or <name>_mask.png)",
    )
    parser.add_argument(
        "--backbone",
        default=defaults.backbone,
        help=" | ".join(list_backbones()),
    )
    parser.add_argument(
        "--weights",
        default=defaults.weights,
        help="local backbone weights file (offline ResNet use)",
    )
    parser.add_argument(
        "--no-pretrained", action="store_true", help="random backbone weights (tests only)"
    )
    parser.add_argument(
        "--n-anomalies",
        type=int,
        default=defaults.n_anomalies,
        help="real anomalies drawn for training and removed from the test set",
    )
    parser.add_argument(
        "--split-by",
        choices=SPLIT_UNITS,
        default=defaults.split_by,
        help="image: the usual protocol; group: images of one physical object (MTD: one tile "
        "under several lightings) stay on one side of the split (docs/results.md)",
    )
    parser.add_argument("--steps", type=int, default=defaults.steps, help="training steps")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help="global batch size (split across torchrun processes)",
    )
    parser.add_argument(
        "--image-size", type=int, default=defaults.image_size, help="square network input (px)"
    )
    parser.add_argument("--lr", type=float, default=defaults.lr, help="AdamW learning rate")
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="draws the split, the few-shot anomalies, the samples and the initial weights",
    )
    parser.add_argument(
        "--textures",
        default=defaults.textures,
        help="texture folder for DRAEM-style pasting, e.g. DTD",
    )
    parser.add_argument(
        "--seen-blend",
        choices=["paste", "poisson"],
        default=defaults.seen_blend,
        help="how real defects are pasted by the seen-anomaly extension",
    )
    parser.add_argument(
        "--seen-position",
        choices=POSITIONS,
        default=defaults.seen_position,
        help="where pasted real defects go: random, or source (where they were in their "
        "own image; for aligned parts and tiles)",
    )
    parser.add_argument(
        "--seen-rotation",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=defaults.seen_rotation,
        help="rotation range (degrees) of pasted real defects",
    )
    parser.add_argument(
        "--simulated",
        nargs="+",
        choices=SIMULATION_STRATEGIES,
        default=defaults.simulated,
        help="simulated-anomaly strategies, mixed in equal shares",
    )
    parser.add_argument(
        "--band-sides",
        nargs="+",
        choices=EDGE_SIDES,
        default=defaults.band_sides,
        help="image edges the 'band' strategy starts from",
    )
    parser.add_argument(
        "--crack-angle",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=defaults.crack_angle,
        help="headings of the 'crack' strategy's lines in degrees (0 across, 90 down the image)",
    )
    parser.add_argument(
        "--mix",
        type=float,
        nargs=3,
        metavar=("NORMAL", "SEEN", "SIMULATED"),
        default=[defaults.normal_weight, defaults.seen_weight, defaults.simulated_weight],
        help="weights of normal / seen-extension / simulated samples",
    )
    parser.add_argument(
        "--original-weight",
        type=float,
        default=defaults.original_weight,
        help="weight of the few-shot anomalous images themselves, unaltered but for flips "
        "(anomgen RealAnomalyImage), beside --mix's three (0: the paper's mix)",
    )
    parser.add_argument(
        "--augmented-original-weight",
        type=float,
        default=defaults.augmented_original_weight,
        help="weight of the few-shot anomalous images with a seen or simulated anomaly added "
        "on top, their masks joined",
    )
    parser.add_argument(
        "--no-residuals",
        action="store_true",
        help="ablation: feed zeros instead of the prototype residuals",
    )
    parser.add_argument(
        "--prototype-ratio",
        type=float,
        default=defaults.prototype_ratio,
        help="prototypes per scale as a share of the normal training images (paper: 0.1)",
    )
    parser.add_argument(
        "--prototype-share",
        type=float,
        default=defaults.prototype_share,
        help="share of the normal training tiles the prototypes are fitted on (paper: 1)",
    )
    parser.add_argument(
        "--prototype-matching",
        choices=MATCHING_MODES,
        default=defaults.prototype_matching,
        help="image: nearest whole normal map (paper); patch: nearest normal feature vector "
        "at each location, meant for unaligned textures (on MTD image matching did better, "
        "docs/results.md)",
    )
    parser.add_argument(
        "--patch-prototypes",
        type=int,
        default=defaults.patch_prototypes,
        help="prototypes per scale with --prototype-matching patch",
    )
    parser.add_argument(
        "--attention-divisors",
        type=int,
        nargs="+",
        default=defaults.attention_divisors,
        help="MSSA patch sizes as divisors of each map side (1 = the whole map)",
    )
    parser.add_argument(
        "--top-k",
        type=int,
        default=defaults.top_k,
        help="image score = mean of the k largest map values",
    )
    parser.add_argument(
        "--memory-bank-size",
        type=int,
        default=defaults.memory_bank_size,
        help="0: PRN alone (the paper); N: fuse a PatchCore-style memory bank of N normal "
        "patch vectors into the maps after training (docs/prn.md; 8192 on MTD)",
    )
    parser.add_argument(
        "--memory-bank-weight",
        type=float,
        default=defaults.memory_bank_weight,
        help="weight of the memory bank's map in the fusion (0.5: equal)",
    )
    parser.add_argument(
        "--intensity-normalisation",
        choices=INTENSITY_NORMALISATIONS,
        default=defaults.intensity_normalisation,
        help="image: bring every image to one grey-level mean and contrast before the backbone, "
        "so exposure differences are not anomalies (MTD; docs/results.md)",
    )
    parser.add_argument(
        "--encoder-from-stride",
        type=int,
        choices=ENCODER_FROM_STRIDES,
        default=defaults.encoder_from_stride,
        help="0: PRN's frozen encoder; 8, 16 or 32: fine-tune the encoder from the map at this "
        "stride on (docs/prn.md; on MTD 16 gives most of the gain, docs/results.md)",
    )
    parser.add_argument(
        "--encoder-lr-scale",
        type=float,
        default=defaults.encoder_lr_scale,
        help="the fine-tuned encoder blocks' learning rate as a multiple of --lr",
    )
    parser.add_argument(
        "--prototype-refit-every",
        type=int,
        default=defaults.prototype_refit_every,
        help="steps between prototype refits while the encoder maps they match change",
    )
    parser.add_argument(
        "--head-only-steps",
        type=int,
        default=defaults.head_only_steps,
        help="last steps that train the head alone on the final prototypes (after refits)",
    )
    parser.add_argument(
        "--recipe",
        default=defaults.recipe,
        help="anomgen YAML/JSON config replacing the training mix",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=defaults.checkpoint_every,
        help="steps between the checkpoints --resume continues from",
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        default=defaults.num_workers,
        help="DataLoader worker processes (0: load in the training process)",
    )
    parser.add_argument("--device", default=defaults.device, help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--out", type=Path, default=Path("runs/prn"), help="output folder")
    continuation = parser.add_mutually_exclusive_group()
    continuation.add_argument(
        "--resume", action="store_true", help="continue from OUT/checkpoint.pt"
    )
    continuation.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run OUT already holds (its checkpoint, metrics, summary and heatmaps "
        "are removed first); without it such an OUT is refused",
    )
    parser.add_argument("--stop-at-step", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.config is not None:  # read only now: a bad command line is reported first
        defaults = SimpleNamespace(**_config_file(args.config))
        parser.set_defaults(
            **vars(defaults),
            mix=[defaults.normal_weight, defaults.seen_weight, defaults.simulated_weight],
        )
        args = parser.parse_args(argv)
    values = {
        f.name: getattr(args, f.name, getattr(defaults, f.name))
        for f in dataclasses.fields(TrainConfig)
    }
    values["pretrained"] = defaults.pretrained and not args.no_pretrained
    values["use_residuals"] = defaults.use_residuals and not args.no_residuals
    values["normal_weight"], values["seen_weight"], values["simulated_weight"] = args.mix
    return TrainConfig(**values).with_absolute_paths(), args.out, args.resume, args.overwrite


def _config_file(path: Path) -> dict[str, Any]:
    """TrainConfig values from a run's config.json; keys it lacks (options added since) take
    their defaults. ``stop_at_step`` is dropped: a re-run trains the whole schedule."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))  # JSON is UTF-8 (RFC 8259)
    except UnicodeDecodeError as error:  # else a bare codec message that names no file
        raise ValueError(
            f"--config {str(path)!r} is not UTF-8 text (a config.json): {error.reason} at byte "
            f"{error.start}"
        ) from None
    except json.JSONDecodeError as error:
        raise ValueError(f"--config {str(path)!r} is not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config {str(path)!r} must hold a JSON object of TrainConfig values")
    unknown = unknown_fields(values, TrainConfig)
    if unknown:
        raise ValueError(f"--config {str(path)!r} has unknown TrainConfig keys {unknown}")
    # The values become argparse defaults, which argparse would convert from a string
    # ("5" -> 5) or reject as if typed on the command line; a string is refused here instead.
    hints = typing.get_type_hints(TrainConfig)
    for key, value in values.items():
        hint = hints[key]
        if isinstance(value, str) and hint is not str and str not in typing.get_args(hint):
            kind = hint.__name__ if isinstance(hint, type) else str(hint)  # "int", "list[float]"
            raise ValueError(f"--config {str(path)!r}: {key} must be of type {kind}, got {value!r}")
    return {**dataclasses.asdict(TrainConfig()), **values, "stop_at_step": None}


# How command.txt writes the program of a run; prn-train itself otherwise.
_PROGRAMS = {"train_prn": "python recipes/train_prn.py"}


def main(argv: list[str] | None = None, prog: str = "prn-train") -> int:
    """Exit status 0 when the run finished, 2 on bad options or data (one line on stderr)."""
    words = sys.argv[1:] if argv is None else argv
    command = f"{_PROGRAMS.get(prog, prog)} {shlex.join(words)}".strip()
    try:
        config, out, resume, overwrite = parse_args(argv, prog)
        metrics = run(config, out, resume=resume, overwrite=overwrite, command=command)
    except (ValueError, OSError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    if metrics is not None:
        print((out / "summary.md").read_text())
        print(f"outputs in {out}/ (metrics.json, summary.md, config.json, heatmaps/, ...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
