"""The ``anomgen`` command: ``preview`` renders samples, ``list`` lists transforms."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import yaml

from anomgen import __version__
from anomgen.core import AnomalyTransform, check_seed, from_dict, registered_transforms
from anomgen.io import list_images
from anomgen.presets import PRESETS, build_preset
from anomgen.preview import check_grid, check_png_path, render_preview, save_png_atomic

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anomgen", description="Anomaly-synthesis transforms: preview and list them."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    preview = sub.add_parser(
        "preview",
        help="render a grid PNG of synthesized samples",
        description="Render a grid PNG: for each sample the source image, the synthesized image "
        "and the mask outlined on it, captioned with the strategy.",
    )
    preview.add_argument("--images", required=True, type=Path, help="folder of normal images")
    source = preview.add_mutually_exclusive_group()
    source.add_argument(
        "--preset", default=None, help=f"named mix: {', '.join(PRESETS)} (default: draem)"
    )
    source.add_argument(
        "--config", type=Path, help="YAML/JSON transform config (the output of to_dict())"
    )
    preview.add_argument("--textures", type=Path, help="texture folder, e.g. DTD (default: self)")
    preview.add_argument(
        "--anomalies",
        type=Path,
        help="real anomalous images; masks are same-named .png files beside them (MTD) "
        "or <name>_mask.png / <name>.png in --masks (MVTec)",
    )
    preview.add_argument("--masks", type=Path, help="folder of masks for --anomalies")
    preview.add_argument("-n", type=int, default=16, help="number of samples (default 16)")
    preview.add_argument("--size", type=int, default=256, help="image side in px (default 256)")
    preview.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    preview.add_argument("--out", required=True, type=Path, help="output .png file")
    sub.add_parser("list", help="list transforms and presets with their parameters")
    return parser


def _load_config(path: Path) -> AnomalyTransform:
    if not path.is_file():
        problem = "is not a file" if path.exists() else "does not exist"
        raise FileNotFoundError(f"config file {str(path)!r} {problem}")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(
            f"config file {str(path)!r} is not UTF-8 text (YAML/JSON): {error.reason} at byte "
            f"{error.start}"
        ) from None
    except yaml.YAMLError as error:
        # PyYAML's message spans several lines; the CLI promises one.
        problem = getattr(error, "problem", None) or " ".join(str(error).split())
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(
            f"config file {str(path)!r} is not valid YAML/JSON: {problem}{where}"
        ) from None
    return from_dict(config)


def _preview(args: argparse.Namespace) -> None:
    check_png_path(args.out)
    # Checked before any data loads (texture and anomaly pools take seconds).
    check_seed(args.seed, "--seed")
    check_grid(args.n, args.size)
    images = list_images(args.images)
    if args.config is not None:
        given = [f"--{n}" for n in ("textures", "anomalies", "masks") if getattr(args, n)]
        if given:
            raise ValueError(
                f"{', '.join(given)} apply to presets; a --config names its own data folders"
            )
        transform = _load_config(args.config)
    else:
        transform = build_preset(
            args.preset or "draem",
            textures=args.textures,
            anomalies=args.anomalies,
            masks=args.masks,
        )
    grid = render_preview(images, transform, n=args.n, size=args.size, seed=args.seed)
    out = save_png_atomic(grid, args.out)
    print(f"wrote {out} ({args.n} samples, {grid.width}x{grid.height})")


def _list() -> None:
    print("Transforms:")
    for name, cls in registered_transforms().items():
        fields = [
            f"{f.name}={f.default!r}" if f.default is not dataclasses.MISSING else f.name
            for f in dataclasses.fields(cls)
            if f.init
        ]
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"  {name}({', '.join(fields)})\n      {doc}")
    print("Presets:")
    for name, build in PRESETS.items():
        print(f"  {name}: {(build.__doc__ or '').strip().splitlines()[0]}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "preview":
            _preview(args)
        else:
            _list()
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"anomgen: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
