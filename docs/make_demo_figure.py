"""Regenerate docs/images/prn_demo_heatmaps.png from a finished run's heatmaps.

Puts the run's three heatmap grids side by side: the best-detected anomalies, the
most-missed anomalies and the worst false alarms, each row the test image and its map with
the true defect outlined. The committed figure is the offline demo's (synthetic data, no
dataset committed):

    python recipes/train_prn.py --out runs/prn    # the demo, about two minutes on 2 CPU cores
    python docs/make_demo_figure.py --run runs/prn
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from anomgen.preview import save_png_atomic

OUT = Path(__file__).resolve().parent / "images" / "prn_demo_heatmaps.png"
PANELS = {
    "detected_anomalies": "best-detected anomalies",
    "missed_anomalies": "most-missed anomalies",
    "false_alarms": "worst false alarms (normal)",
}
_TITLE_HEIGHT, _GAP = 22, 8


def _rows(grid: np.ndarray, path: Path) -> list[np.ndarray]:
    """Split a heatmap grid (rows of image | map, each row as tall as half its width)."""
    side = grid.shape[1] // 2
    if grid.ndim != 3 or side == 0 or grid.shape[0] % side:
        raise ValueError(f"{path} is not a heatmap grid of image | map rows: shape {grid.shape}")
    return [grid[top : top + side] for top in range(0, grid.shape[0], side)]


def compose(run: Path, rows: int) -> np.ndarray:
    """The figure as an RGB array: one titled column per heatmap grid, ``rows`` rows each."""
    panels = []
    for name, title in PANELS.items():
        path = run / "heatmaps" / f"{name}.png"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist: run `python recipes/train_prn.py --out {run}` first"
            )
        panel = np.concatenate(_rows(np.asarray(Image.open(path).convert("RGB")), path)[:rows])
        header = np.full((_TITLE_HEIGHT, panel.shape[1], 3), 255, np.uint8)
        cv2.putText(header, title, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 0, 1, cv2.LINE_AA)
        panels.append(np.concatenate([header, panel]))
    height = max(panel.shape[0] for panel in panels)
    padded = []
    for panel in panels:
        below = np.full((height - panel.shape[0], panel.shape[1], 3), 255, np.uint8)
        gap = np.full((height, _GAP, 3), 255, np.uint8)
        padded += [np.concatenate([panel, below]), gap]
    return np.concatenate(padded[:-1], axis=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/prn"), help="a finished run")
    parser.add_argument("--rows", type=int, default=4, help="rows from each grid, at most")
    parser.add_argument("--out", type=Path, default=OUT, help="the PNG to write")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error(f"--rows must be at least 1, got {args.rows}")
    try:
        figure = compose(args.run, args.rows)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    save_png_atomic(Image.fromarray(figure), args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
