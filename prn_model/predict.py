"""``prn-predict``: score every image of a folder with a trained PRN checkpoint.

Writes ``OUT/scores.csv`` (file, score[, anomalous], error) and, per image, a heatmap overlay
``OUT/heatmaps/<file name>.png`` (the image at its own size beside the anomaly map blended
over it). Unreadable images are reported on stderr, listed in the CSV with their error and
skipped. While it runs, each row is appended to ``OUT/scores.partial.csv`` as soon as its
image is scored, so an interrupted run keeps its work and ``--resume`` continues it (only with
the same model, folder and options, recorded in ``OUT/scores.partial.json``); ``scores.csv``
appears, sorted by file name, only when every image is done. Exit status: 0 all images scored,
1 some skipped, 2 nothing could be done (missing checkpoint, no images, bad option), 130
interrupted.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import shutil
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from anomgen.io import IMAGE_SUFFIXES, _non_file_kind, list_images
from anomgen.preview import folder_problem, save_png_atomic
from prn_model.atomic import write_text_atomic
from prn_model.data import load_image
from prn_model.devices import checked_device
from prn_model.network import PRN
from prn_model.visualize import heatmap_overlay
from prn_model.zoo import _checkpoint_file, load_model

__all__ = ["main", "predict_folder"]

MASK_SUFFIX = "_mask"
PARTIAL_CSV, PARTIAL_INFO = "scores.partial.csv", "scores.partial.json"


def _save_heatmap(image: torch.Tensor, heat: torch.Tensor, path: Path) -> None:
    heat_2d = heat[0].float().cpu().numpy()
    row = heatmap_overlay(image.float(), heat_2d, np.zeros_like(heat_2d))
    save_png_atomic(Image.fromarray(row), path)


def predict_folder(
    model: PRN,
    images_dir: str | Path,
    out: str | Path,
    batch_size: int = 8,
    heatmaps: bool = True,
    threshold: float | None = None,
    overwrite: bool = False,
    resume: bool = False,
) -> list[dict[str, str]]:
    """Score every image of ``images_dir`` and write ``scores.csv`` (+ heatmaps) under ``out``.

    Images are listed like ``anomgen.io.list_images``: sorted, ``*_mask.*`` files and a
    ``.png`` sharing its stem with another image (its mask) skipped. Returns the CSV rows;
    a row with a non-empty ``error`` is an image that could not be read (or scored). Every
    other file of the folder is named on stderr with why it was not scored. Files are read
    with the channels the model was trained on: a colour file given to a grayscale model is
    converted to luma, as its training images were.

    Rows are appended to ``out/scores.partial.csv`` as they are scored. An ``out`` holding
    earlier results is refused unless ``overwrite`` (they are removed first, so no old heatmap
    sits beside the new scores) or, for an interrupted run, ``resume``: its scored rows are
    kept and only the other images (and those that failed) are scored.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if threshold is not None and not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"threshold must be in [0, 1] (scores are probabilities), got {threshold}")
    if overwrite and resume:
        raise ValueError("overwrite and resume exclude each other")
    _check_out(Path(out))
    files = _list_images(Path(images_dir))
    _report_unscored(Path(images_dir), files)
    # Files are read with the channels the model was trained on (colour turned to luma for a
    # grayscale model); None keeps each file's own.
    grayscale = model.grayscale_input
    out = Path(out)
    heatmap_dir = out / "heatmaps"
    columns = ["file", "score", *(["anomalous"] if threshold is not None else []), "error"]
    settings = {
        "model": _fingerprint(model),
        "images_dir": str(Path(images_dir).resolve()),
        "threshold": threshold,
        "heatmaps": heatmaps,
    }
    kept = _start_output(out, settings, columns, overwrite, resume)
    gone = sorted(set(kept) - {path.name for path in files})
    if gone:
        print(
            f"prn-predict: resuming: dropping the rows of {len(gone)} files no longer in the "
            f"folder ({', '.join(gone[:5])}{', ...' if len(gone) > 5 else ''})",
            file=sys.stderr,
        )
    kept = {
        name: row
        for name, row in kept.items()
        if not heatmaps or (heatmap_dir / f"{name}.png").is_file()
    }
    rows = [row for path in files if (row := kept.get(path.name)) is not None]
    todo = [path for path in files if path.name not in kept]
    (heatmap_dir if heatmaps else out).mkdir(parents=True, exist_ok=True)

    with (
        _PartialLog(out / PARTIAL_CSV, columns) as log,
        tqdm(
            total=len(files), initial=len(files) - len(todo), desc="predict", unit="image"
        ) as progress,
    ):

        def record(row: dict[str, str]) -> None:
            log.append(row)
            rows.append(row)

        for start in range(0, len(todo), batch_size):
            loaded: list[tuple[Path, torch.Tensor]] = []
            for path in todo[start : start + batch_size]:
                try:
                    loaded.append((path, load_image(path, grayscale=grayscale)))
                except (ValueError, OSError, Image.DecompressionBombError) as error:
                    progress.write(f"prn-predict: skipping {path.name}: {error}", file=sys.stderr)
                    record({"file": path.name, "score": "", "error": str(error)})
            if loaded:
                scores, maps = model.predict([image for _, image in loaded], batch_size)
                for (path, image), score, heat in zip(loaded, scores.tolist(), maps):
                    if not math.isfinite(score):
                        error = f"the model gave a non-finite score ({score})"
                        progress.write(f"prn-predict: {path.name}: {error}", file=sys.stderr)
                        record({"file": path.name, "score": "", "error": error})
                        continue
                    row = {"file": path.name, "score": f"{score:.6f}", "error": ""}
                    if threshold is not None:
                        row["anomalous"] = str(int(score >= threshold))
                    if heatmaps:  # before its row, so a logged row always has its heatmap
                        _save_heatmap(image, heat, heatmap_dir / f"{path.name}.png")
                    record(row)
            progress.update(len(todo[start : start + batch_size]))

    order = {path.name: index for index, path in enumerate(files)}
    rows.sort(key=lambda row: order[row["file"]])
    write_text_atomic(out / "scores.csv", _csv_text(columns, rows))
    (out / PARTIAL_CSV).unlink()
    (out / PARTIAL_INFO).unlink()
    return rows


def _csv_text(columns: list[str], rows: Iterable[dict[str, str]]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def _fingerprint(model: PRN) -> str:
    """SHA-256 of the model's config, weights and buffers: which model wrote a partial CSV."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def _start_output(
    out: Path, settings: dict[str, object], columns: list[str], overwrite: bool, resume: bool
) -> dict[str, dict[str, str]]:
    """Clear, check or resume ``out``; return the rows (by file) an interrupted run scored."""
    final, partial, info = out / "scores.csv", out / PARTIAL_CSV, out / PARTIAL_INFO
    heatmap_dir = out / "heatmaps"
    if overwrite:
        for path in (final, partial, info):
            path.unlink(missing_ok=True)
        shutil.rmtree(heatmap_dir, ignore_errors=True)
    elif resume and partial.is_file():
        kept = _read_partial(partial, info, settings)
        print(f"prn-predict: resuming: {len(kept)} images already scored", file=sys.stderr)
        # Rewritten with the kept rows only, so appending never continues a cut-off line.
        write_text_atomic(partial, _csv_text(columns, kept.values()))
        return kept
    elif resume and final.is_file():
        raise ValueError(
            f"{str(out)!r} holds finished results (scores.csv), nothing to resume; pass "
            "--overwrite to score again or choose another --out"
        )
    elif partial.is_file():
        raise ValueError(
            f"{str(out)!r} holds an interrupted run ({PARTIAL_CSV}); pass --resume to continue "
            "it, --overwrite to start again, or choose another --out"
        )
    elif final.is_file() or (heatmap_dir.is_dir() and any(heatmap_dir.iterdir())):
        raise ValueError(
            f"{str(out)!r} holds earlier results (scores.csv or heatmaps/); pass --overwrite "
            "to replace them or choose another --out"
        )
    elif resume:
        print(f"prn-predict: nothing to resume in {str(out)!r}; starting afresh", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(info, json.dumps(settings, indent=2))
    partial.unlink(missing_ok=True)
    return {}


def _read_partial(
    partial: Path, info: Path, settings: dict[str, object]
) -> dict[str, dict[str, str]]:
    """The scored rows of an interrupted run, if it ran with the same model and options."""
    try:
        started = json.loads(info.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(
            f"cannot resume: {str(info)!r} is missing or unreadable ({error})"
        ) from None
    differing = sorted(key for key in settings if started.get(key) != settings[key])
    if differing:
        raise ValueError(
            f"cannot resume: {str(partial)!r} was started with another "
            f"{', '.join(differing)}; pass --overwrite to start again"
        )
    with partial.open(newline="") as stream:
        # Rows that failed are scored again; a line cut short by a kill has missing fields.
        return {
            row["file"]: row
            for row in csv.DictReader(stream)
            if row.get("error") == "" and _is_number(row.get("score"))
        }


def _is_number(text: str | None) -> bool:
    try:
        return text is not None and math.isfinite(float(text))
    except ValueError:
        return False


class _PartialLog:
    """Append-only CSV of the rows scored so far, flushed row by row."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        new = not path.is_file()
        self._stream = path.open("a", newline="")
        self._writer = csv.DictWriter(
            self._stream, fieldnames=columns, restval="", lineterminator="\n"
        )
        if new:
            self._writer.writeheader()

    def append(self, row: dict[str, str]) -> None:
        self._writer.writerow(row)
        self._stream.flush()

    def __enter__(self) -> _PartialLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stream.close()


def _list_images(images_dir: Path) -> list[Path]:
    """The images to score (see ``predict_folder``); a single image given as the folder is
    named as such rather than as a missing folder."""
    if images_dir.is_file():
        raise ValueError(
            f"image folder {str(images_dir)!r} is a file, not a folder; give its folder "
            f"{str(images_dir.parent)!r}"
        )
    # Broken links and folders named like images are left out here and named on stderr by
    # _report_unscored, as every other entry that is not scored.
    return list_images(images_dir, exclude_suffix=MASK_SUFFIX, keep_non_files=True)


def _check_out(out: Path) -> None:
    """Refuse an ``out`` that is a file (or has one in its path) before any image is scored,
    rather than failing with ``[Errno 17] File exists`` once the model has loaded."""
    problem = folder_problem(out)
    if problem is not None:
        raise ValueError(f"output folder {str(out)!r} {problem}")


def _report_unscored(folder: Path, files: Sequence[Path]) -> None:
    """Name every file of ``folder`` that is not scored, with the reason: nothing is skipped
    without a word."""
    scored = set(files)
    stems = {path.stem: path.name for path in files if path.suffix.lower() != ".png"}
    for path in sorted(folder.iterdir()):
        if path in scored or (path.is_dir() and path.suffix.lower() not in IMAGE_SUFFIXES):
            continue
        if not path.is_file():
            reason = f"{_non_file_kind(path)}, not an image file"
        elif path.suffix.lower() not in IMAGE_SUFFIXES:
            reason = f"not an image type this reads ({', '.join(IMAGE_SUFFIXES)})"
        elif path.stem.endswith(MASK_SUFFIX):
            reason = f"a mask ({MASK_SUFFIX} suffix)"
        else:
            reason = f"taken as the mask of {stems.get(path.stem, 'a same-named image')}"
        print(f"prn-predict: not scored: {path.name}: {reason}", file=sys.stderr)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="prn-predict",
        description="Score every image in a folder with a trained PRN checkpoint. Writes "
        "OUT/scores.csv (file, score in [0, 1], anomalous with --threshold, error) and one "
        "heatmap overlay per image as OUT/heatmaps/<file name>.png. Files named *_mask.* and a "
        ".png sharing its name with another image (its mask) are not scored; every file left "
        "out is named on stderr.",
        epilog="Exit status: 0 all images scored; 1 some images could not be read (named on "
        "stderr and in the CSV's error column); 2 missing checkpoint, no images or bad option; "
        "130 interrupted (the rows scored so far stay in OUT/scores.partial.csv for --resume).",
    )
    parser.add_argument("checkpoint", type=Path, help="checkpoint.pt written by the recipe")
    parser.add_argument("images_dir", type=Path, help="folder of images (not recursive)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--no-heatmaps", action="store_true", help="write only scores.csv")
    continuation = parser.add_mutually_exclusive_group()
    continuation.add_argument(
        "--overwrite",
        action="store_true",
        help="replace earlier results in OUT (scores.csv, heatmaps/); without it they are refused",
    )
    continuation.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in OUT (scores.partial.csv): images already scored "
        "are kept; needs the same checkpoint, folder and options",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        help="adds anomalous = 1 where score >= THRESHOLD (in [0, 1]), else 0",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        device = checked_device(args.device, "--device")
        _checkpoint_file(args.checkpoint)  # both paths checked before the slow loading
        _list_images(args.images_dir)
        _check_out(args.out)
        model = load_model(args.checkpoint, device=device)
        rows = predict_folder(
            model,
            args.images_dir,
            args.out,
            batch_size=args.batch_size,
            heatmaps=not args.no_heatmaps,
            threshold=args.threshold,
            overwrite=args.overwrite,
            resume=args.resume,
        )
    except (ValueError, OSError) as error:  # OSError: an --out that is a file, a full disk
        print(f"prn-predict: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        partial = args.out / PARTIAL_CSV
        where = f"the rows scored so far are in {partial}; " if partial.is_file() else ""
        print(f"prn-predict: interrupted; {where}rerun with --resume to go on", file=sys.stderr)
        return 130
    failed = sum(1 for row in rows if row["error"])
    print(
        f"scored {len(rows) - failed} of {len(rows)} images -> {args.out / 'scores.csv'}"
        + (f" ({failed} unreadable, see the error column)" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
