"""Ten-shot PRN results on real data, over several seeds, written to a markdown report.

Default: the Magnetic Tile Defect dataset (../shared/data/mtd) with the zoo's best MTD
setting (``prn_lite0_mtd_normalised``: efficientnet_lite0, 256x256), 10 real anomalies drawn
by seed and removed from the test set, normal images split 3:1, DTD textures when
../shared/data/dtd exists; seeds 0, 1, 2. ``--model`` starts from another zoo entry, and
every other option overrides the entry's value. Each run's metrics, wall time and peak
memory go into the report, with mean and sample standard deviation over the seeds, overall and
per defect type (that type's anomalous test images with all normal ones); on an MVTec AD
category the paper's per-category figures stand beside the run's. The published benchmark
(MTD, the default entry unchanged, DTD textures, seeds 0 1 2) replaces the generated block of
docs/results.md; any other run writes OUT/report.md, so a smoke test or an ablation never
overwrites the published figures (``--report FILE`` chooses the file).

    python recipes/benchmark_mtd.py                     # MTD, 3 seeds, best setting
    python recipes/benchmark_mtd.py --model prn_lite0_mtd   # MTD in the paper's setting
    python recipes/benchmark_mtd.py --dataset mvtec --root /data/mvtec --category bottle \
        --out runs/bottle                               # the paper's MVTec setting; its
                                                        # report: runs/bottle/report.md
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import signal
import statistics
import sys
import time
from pathlib import Path
from queue import Empty
from typing import Any

from prn_model.atomic import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
# The zoo entry each dataset starts from when --model is not given.
DEFAULT_MODELS = {"mtd": "prn_lite0_mtd_normalised", "mvtec": "prn_resnet18_mvtec"}
DEFAULT_SEEDS = [0, 1, 2]
PUBLISHED_REPORT = ROOT / "docs" / "results.md"
METRICS = ["image_auroc", "pixel_auroc", "aupro", "pixel_ap", "image_f1_max", "pixel_f1_max"]


def _one_run(kwargs: dict, out: str, queue) -> None:
    """One seed in a fresh process, so its peak memory is its own (not the earlier seeds')."""
    from prn_model.peak_memory import peak_rss_mib
    from prn_model.train import TrainConfig, run

    started = time.perf_counter()
    metrics = run(TrainConfig(**kwargs), out, overwrite=True)  # a re-run replaces the seed's
    metrics["wall_seconds"] = round(time.perf_counter() - started, 1)
    metrics["peak_rss_mib"] = peak_rss_mib()
    queue.put(metrics)


def _wait_for(process, queue) -> dict | None:
    """The seed's metrics, or None when its process ends without them (it crashed)."""
    metrics = None
    # Poll rather than block: a seed that crashes never puts its metrics.
    while metrics is None and (process.is_alive() or not queue.empty()):
        try:
            metrics = queue.get(timeout=1)
        except Empty:
            pass
    process.join()
    return metrics


def _exit_on_sigterm(signum: int, _frame) -> None:
    """``kill`` exits through the ``finally`` blocks (which stop the running seed)."""
    sys.exit(128 + signum)


def _mean_std(values: list[float], scale: float = 1.0, digits: int = 4) -> str:
    """Mean ± sample standard deviation (n - 1) of the defined values, times ``scale``.

    A value that is NaN (a metric undefined on a seed, or a defect type absent from its test
    set) is left out, and the cell says on how many seeds it stands; one value has no std.
    """
    finite = [v * scale for v in values if not math.isnan(v)]
    if not finite:
        return "n/a"
    std = f"{statistics.stdev(finite):.{digits}f}" if len(finite) > 1 else "n/a"
    text = f"{statistics.mean(finite):.{digits}f} ± {std}"
    if len(finite) < len(values):
        text += f" ({len(finite)} of {len(values)} seeds)"
    return text


def _report(args: argparse.Namespace, runs: list[dict], command: str) -> str:
    name = args.dataset.upper() + (f" / {args.category}" if args.category else "")
    lines = [
        f"# PRN results on {name}",
        "",
        f"Zoo entry `{args.model}` with the command's options. "
        f"{'Ten' if args.n_anomalies == 10 else args.n_anomalies}-shot protocol: "
        f"{args.n_anomalies} real anomalies drawn by seed and removed from the "
        f"test set{', normal images split 3:1' if args.dataset != 'mvtec' else ''}"
        + (
            " (split by physical tile: the drawn anomalies come from distinct tiles, every image "
            "of a drawn tile leaves the test set, and no tile has images on both sides of the "
            "normal split)"
            if args.split_by == "group"
            else ""
        )
        + f"; backbone "
        f"`{args.backbone}`, {args.image_size}x{args.image_size}, {args.steps} steps of batch "
        f"{args.batch_size}, {args.prototype_matching} prototype matching (ratio "
        f"{args.prototype_ratio}"
        + (
            f", fitted on {args.prototype_share:g} of the normal training tiles"
            if args.prototype_share < 1
            else ""
        )
        + "), attention divisors "
        f"{' '.join(map(str, args.attention_divisors))}, real defects pasted at "
        f"{args.seen_position} positions rotated by {args.seen_rotation[0]:g} to "
        f"{args.seen_rotation[1]:g} degrees, simulated anomalies "
        f"{' + '.join(args.simulated)}{_simulation_details(args)}"
        + (
            f", the few-shot anomalous images themselves at weight {args.original_weight:g} "
            f"(normal {args.mix[0]:g}, seen {args.mix[1]:g}, simulated {args.mix[2]:g})"
            if args.original_weight
            else ""
        )
        + (
            ", the few-shot anomalous images with a seen or simulated anomaly added on top at "
            f"weight {args.augmented_original_weight:g}"
            if args.augmented_original_weight
            else ""
        )
        + ", "
        + (
            "every image brought to one grey-level mean and contrast before the backbone, "
            if args.intensity_normalisation == "image"
            else ""
        )
        + (
            f"the encoder fine-tuned from stride {args.encoder_from_stride} on at "
            f"{args.encoder_lr_scale:g} x the learning rate, "
            if args.encoder_from_stride
            else ""
        )
        + (
            f"maps fused with a memory bank of {args.memory_bank_size} normal patch vectors "
            f"(weight {args.memory_bank_weight:g}), "
            if args.memory_bank_size
            else ""
        )
        + "seeds "
        f"{', '.join(map(str, args.seeds))}. Metrics at "
        f"{args.image_size} px (masks resized with nearest neighbour).",
        "",
        f"Command: `{command}`",
        "",
        _environment_line(runs),
        "",
        "## Mean ± standard deviation over seeds",
        "",
        "Sample standard deviation (n - 1). A defect type's row scores that type's anomalous "
        "test images together with all normal test images. A metric undefined on a seed (NaN) "
        "is left out of its cell, which then says on how many seeds it stands.",
        "",
        "| scope | " + " | ".join(METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
        "| all | " + " | ".join(_mean_std([r[m] for r in runs]) for m in METRICS) + " |",
    ]
    # Every type of any seed: a type whose images were all drawn as few-shot anomalies on a
    # seed is absent from that seed's test set (NaN there), not a reason to drop the row.
    defects = dict.fromkeys(d for r in runs for d in r.get("per_defect_type", {}))
    for defect in defects:
        per_seed = [r.get("per_defect_type", {}).get(defect, {}) for r in runs]
        cells = [_mean_std([p.get(m, math.nan) for p in per_seed]) for m in METRICS]
        lines.append(f"| {defect} | " + " | ".join(cells) + " |")
    lines += _paper_comparison(args, runs)
    lines += [
        "",
        "## Each run",
        "",
        "Wall time: the seed's run from reading its data to its metrics (training, "
        "evaluation and heatmaps), without starting its process and importing torch. Peak "
        "memory: that process's resident high-water mark.",
        "",
        "| seed | " + " | ".join(METRICS) + " | wall time (s) | peak memory (MiB) |",
        "|---|" + "---|" * (len(METRICS) + 2),
    ]
    for seed, r in zip(args.seeds, runs):
        cells = [f"{r[m]:.4f}" for m in METRICS]
        lines.append(
            f"| {seed} | " + " | ".join(cells) + f" | {r['wall_seconds']} | {r['peak_rss_mib']} |"
        )
    lines.append("")
    return "\n".join(lines)


# The paper's per-category (image AUROC, pixel AUROC) in per cent on MVTec AD, ten real
# anomalies; transcribed in docs/results.md ("MVTec AD: the paper's setting") with their
# source and caveats. No per-category AUPRO was available.
PAPER_MVTEC = {
    "bottle": (100.0, 99.4),
    "cable": (98.9, 98.8),
    "capsule": (98.0, 98.5),
    "carpet": (97.7, 99.0),
    "grid": (99.4, 98.4),
    "hazelnut": (100.0, 99.7),
    "leather": (100.0, 99.7),
    "metal_nut": (100.0, 99.7),
    "pill": (99.3, 99.5),
    "screw": (95.9, 97.5),
    "tile": (100.0, 99.6),
    "toothbrush": (100.0, 99.6),
    "transistor": (99.7, 98.4),
    "wood": (100.0, 97.8),
    "zipper": (99.7, 98.8),
}


def _paper_comparison(args: argparse.Namespace, runs: list[dict]) -> list[str]:
    """On an MVTec AD category the paper reports: its numbers beside this run's, in per cent."""
    if args.dataset != "mvtec" or args.category not in PAPER_MVTEC:
        return []
    image, pixel = PAPER_MVTEC[args.category]
    yours = [_mean_std([r[m] for r in runs], 100, 1) for m in ("image_auroc", "pixel_auroc")]
    return [
        "",
        "## Beside the paper",
        "",
        "Per cent. The paper's values as transcribed in docs/results.md (\"MVTec AD: the "
        "paper's setting\", with their source and caveats); no per-category AUPRO was available.",
        "",
        "| category | paper image AUROC | paper pixel AUROC | paper AUPRO | your image AUROC "
        "| your pixel AUROC | your AUPRO |",
        "|---|---|---|---|---|---|---|",
        f"| {args.category} | {image:.1f} | {pixel:.1f} | n/a | {yours[0]} | {yours[1]} | "
        f"{_mean_std([r['aupro'] for r in runs], 100, 1)} |",
    ]


def _environment_line(runs: list[dict]) -> str:
    """Where the runs ran: the last digits depend on it (docs/prn.md, "Reproducibility")."""
    described = []
    for r in runs:
        e = r["environment"]
        where = (
            f"CPU ({e['cpu_capability']}, {e['cpu_threads']} threads)"
            if e["device"] == "cpu"
            else e["device"]
        )
        text = (
            f"{where}; Python {e['python']}, torch {e['torch']}, numpy {e['numpy']}, "
            f"OpenCV {e['opencv']}, Pillow {e.get('pillow', 'n/a')}, anomgen {e['anomgen']}"
        )
        if "git_commit" in e:  # absent outside a git checkout
            text += f", commit {e['git_commit'][:12]}"
        if text not in described:
            described.append(text)
    return "Environment: " + " | ".join(described) + "."


START, END = "<!-- benchmark_mtd.py: generated from here -->", "<!-- generated until here -->"


def _write_report(path: Path, generated: str) -> None:
    """Replace the generated block of ``path``, keeping the hand-written analysis around it."""
    block = f"{START}\n{generated}\n{END}"
    text = path.read_text() if path.is_file() else ""
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
    else:
        text = block + "\n" + text
    write_text_atomic(path, text)


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, dict[str, Any]]:
    """The options, and the TrainConfig values every seed shares (not yet checked).

    Raises ValueError for an unknown ``--model``.
    """
    # Two passes: the dataset picks the default zoo entry, the entry every other default.
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument(
        "--dataset",
        choices=sorted(DEFAULT_MODELS),
        help="default: the --model entry's dataset, else mtd",
    )
    first.add_argument(
        "--model",
        help="zoo entry to start from (default: prn_lite0_mtd_normalised on MTD, "
        "prn_resnet18_mvtec on MVTec AD); the options below override its values",
    )
    known = first.parse_known_args(argv)[0]
    from prn_model.data import SPLIT_UNITS
    from prn_model.train import ENCODER_FROM_STRIDES
    from prn_model.zoo import train_settings

    model = known.model or DEFAULT_MODELS[known.dataset or "mtd"]
    zoo = train_settings(model)
    if known.dataset is None:
        # An MVTec AD entry benchmarks on MVTec AD unless --dataset says otherwise.
        if zoo["dataset"] not in DEFAULT_MODELS:
            raise ValueError(
                f"zoo entry {model!r} trains on the {zoo['dataset']!r} dataset; this benchmark "
                f"runs {' or '.join(sorted(DEFAULT_MODELS))}: add --dataset"
            )
        known.dataset = zoo["dataset"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[first])
    parser.set_defaults(dataset=known.dataset)
    parser.add_argument(
        "--root",
        type=Path,
        default=SHARED / "mtd" if known.dataset == "mtd" else None,
        help="dataset root (default for MTD: ../shared/data/mtd; MVTec AD needs it)",
    )
    parser.add_argument("--category")
    parser.add_argument("--backbone", default=zoo["backbone"])
    parser.add_argument("--image-size", type=int, default=zoo["image_size"])
    parser.add_argument("--steps", type=int, default=zoo["steps"])
    parser.add_argument("--batch-size", type=int, default=zoo["batch_size"])
    parser.add_argument("--n-anomalies", type=int, default=zoo["n_anomalies"])
    parser.add_argument(
        "--split-by",
        choices=SPLIT_UNITS,
        default=zoo["split_by"],
        help="group: each MTD tile's images (one per lighting) stay on one side (docs/results.md)",
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=DEFAULT_SEEDS, help="distinct seeds >= 0"
    )
    parser.add_argument(
        "--textures", type=Path, default=SHARED / "dtd" if (SHARED / "dtd").is_dir() else None
    )
    parser.add_argument(
        "--prototype-matching",
        choices=["image", "patch"],
        default=zoo["prototype_matching"],
        help="image: the paper's whole-map prototypes; patch: location-wise (docs/prn.md)",
    )
    parser.add_argument(
        "--attention-divisors",
        type=int,
        nargs="+",
        default=zoo["attention_divisors"],
        help="MSSA patch sizes as divisors of each map side (the paper: 1 2 4 8)",
    )
    parser.add_argument(
        "--prototype-ratio",
        type=float,
        default=zoo["prototype_ratio"],
        help="prototypes as a share of the normal training images (the paper: 0.1)",
    )
    parser.add_argument(
        "--prototype-share",
        type=float,
        default=zoo["prototype_share"],
        help="share of the normal training tiles the prototypes are fitted on (the paper: 1)",
    )
    parser.add_argument(
        "--seen-position",
        choices=["random", "source"],
        default=zoo["seen_position"],
        help="where the seen-anomaly extension pastes real defects (docs/prn.md)",
    )
    parser.add_argument(
        "--seen-rotation",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=zoo["seen_rotation"],
        help="rotation range of pasted real defects in degrees",
    )
    parser.add_argument(
        "--simulated",
        nargs="+",
        default=zoo["simulated"],
        help="simulated-anomaly strategies, mixed in equal shares (the paper: texture scar)",
    )
    parser.add_argument(
        "--band-sides",
        nargs="+",
        default=zoo["band_sides"],
        help="image edges the 'band' strategy starts from",
    )
    parser.add_argument(
        "--crack-angle",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=zoo["crack_angle"],
        help="headings of the 'crack' strategy's lines in degrees (0 across, 90 down the image)",
    )
    parser.add_argument(
        "--original-weight",
        type=float,
        default=zoo["original_weight"],
        help="weight of the few-shot anomalous images themselves in the mix (0: the paper)",
    )
    parser.add_argument(
        "--augmented-original-weight",
        type=float,
        default=zoo["augmented_original_weight"],
        help="weight of the few-shot anomalous images with a seen or simulated anomaly on top",
    )
    parser.add_argument(
        "--memory-bank-size",
        type=int,
        default=zoo["memory_bank_size"],
        help="0: PRN alone; N: fuse a memory bank of N normal patch vectors (docs/prn.md)",
    )
    parser.add_argument(
        "--memory-bank-weight",
        type=float,
        default=zoo["memory_bank_weight"],
        help="weight of the memory bank's map in the fusion (0.5: equal)",
    )
    parser.add_argument(
        "--intensity-normalisation",
        choices=["none", "image"],
        default=zoo["intensity_normalisation"],
        help="image: one grey-level mean and contrast for every image (docs/results.md)",
    )
    parser.add_argument(
        "--encoder-from-stride",
        type=int,
        choices=ENCODER_FROM_STRIDES,
        default=zoo["encoder_from_stride"],
        help="0: frozen encoder (PRN); 8, 16, 32: fine-tune it from that stride on (docs/prn.md)",
    )
    parser.add_argument(
        "--encoder-lr-scale",
        type=float,
        default=zoo["encoder_lr_scale"],
        help="the fine-tuned encoder blocks' learning rate as a multiple of the head's",
    )
    parser.add_argument(
        "--prototype-refit-every",
        type=int,
        default=zoo["prototype_refit_every"],
        help="steps between prototype refits while fine-tuning changes their maps",
    )
    parser.add_argument(
        "--head-only-steps",
        type=int,
        default=zoo["head_only_steps"],
        help="last steps that train the head alone on the final prototypes (after refits)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "benchmark")
    parser.add_argument(
        "--report",
        type=Path,
        help="markdown file whose generated block is replaced (default: docs/results.md for "
        "the published benchmark, i.e. MTD with the default entry unchanged, DTD textures and "
        "seeds 0 1 2; "
        "OUT/report.md for any other run, so smoke tests and ablations never replace it)",
    )
    args = parser.parse_args(argv)
    duplicates = sorted({seed for seed in args.seeds if args.seeds.count(seed) > 1})
    if duplicates or min(args.seeds) < 0:
        parser.error(
            f"--seeds must be distinct integers >= 0, got {' '.join(map(str, args.seeds))}"
        )
    args.model = model
    args.mix = (zoo["normal_weight"], zoo["seen_weight"], zoo["simulated_weight"])
    # Every option named like a TrainConfig field overrides the entry's value.
    settings = {**zoo, **{key: value for key, value in vars(args).items() if key in zoo}}
    for key in ("root", "textures"):  # absolute: the checkpoints can be re-scored from anywhere
        settings[key] = None if settings[key] is None else str(Path(settings[key]).resolve())
    if args.report is None:
        published = (
            args.dataset == "mtd"
            and model == DEFAULT_MODELS["mtd"]
            and args.seeds == DEFAULT_SEEDS
            and _without_paths(settings) == _without_paths(zoo)
            # Measured with DTD: without textures the texture strategy pastes the image's own
            and settings["textures"] is not None
        )
        args.report = PUBLISHED_REPORT if published else args.out / "report.md"
    return args, settings


def _without_paths(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that change the results (the data folders' locations do not)."""
    return {key: value for key, value in settings.items() if key not in ("root", "textures")}


def _simulation_details(args: argparse.Namespace) -> str:
    """The settings of the simulated strategies that have any, in brackets ("" if none)."""
    details = []
    if "band" in args.simulated:
        details.append(f"bands from {' / '.join(args.band_sides)}")
    if "crack" in args.simulated:
        details.append(f"cracks heading {args.crack_angle[0]:g} to {args.crack_angle[1]:g} degrees")
    return f" ({'; '.join(details)})" if details else ""


def main(argv: list[str] | None = None) -> int:
    try:
        args, settings = parse_args(argv)
    except ValueError as error:
        print(f"benchmark_mtd: error: {error}", file=sys.stderr)
        return 2
    if args.root is None:
        print(f"benchmark_mtd: error: --dataset {args.dataset} needs --root", file=sys.stderr)
        return 2
    if not args.root.is_dir():
        problem = "is not a folder" if args.root.exists() else "does not exist"
        print(f"benchmark_mtd: error: dataset root {str(args.root)!r} {problem}", file=sys.stderr)
        return 2
    # Checked now, not after every seed has trained.
    if args.report.is_dir() or not (args.report.parent.is_dir() or args.report.parent == args.out):
        print(
            f"benchmark_mtd: error: --report {str(args.report)!r} must be a file in an existing "
            "folder",
            file=sys.stderr,
        )
        return 2
    from prn_model.backbones import create_backbone
    from prn_model.train import TrainConfig, nan_to_none

    try:  # check every seed's settings, and the backbone's weights, before any seed trains
        for seed in args.seeds:
            TrainConfig(**{**settings, "seed": seed})
        if settings["pretrained"]:
            create_backbone(settings["backbone"], weights_path=settings["weights"])
    except (ValueError, OSError) as error:
        print(f"benchmark_mtd: error: {error}", file=sys.stderr)
        return 2
    runs = []
    context = multiprocessing.get_context("spawn")
    for seed in args.seeds:
        kwargs = {**settings, "seed": seed}
        queue = context.Queue()
        process = context.Process(
            target=_one_run, args=(kwargs, str(args.out / f"seed{seed}"), queue)
        )
        process.start()
        try:
            metrics = _wait_for(process, queue)
        finally:  # interrupted (Ctrl-C, kill): the running seed must not live on alone
            if process.is_alive():
                process.terminate()
                process.join()
        if process.exitcode or metrics is None:
            print(f"benchmark_mtd: error: seed {seed} failed", file=sys.stderr)
            return 1
        runs.append(metrics)
        write_text_atomic(
            args.out / f"seed{seed}" / "benchmark.json", json.dumps(nan_to_none(metrics), indent=2)
        )
        print(f"seed {seed}: " + ", ".join(f"{m}={metrics[m]:.4f}" for m in METRICS))
    command = "python recipes/benchmark_mtd.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    args.report.parent.mkdir(parents=True, exist_ok=True)
    _write_report(args.report, _report(args, runs, command.strip()))
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    sys.exit(main())
