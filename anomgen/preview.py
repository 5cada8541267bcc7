"""Render a grid of synthesized samples: source, result, and mask outline on the result."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw

from anomgen.core import AnomalyTransform, check_seed, derive_seed
from anomgen.io import read_image, resize

__all__ = ["check_grid", "render_preview", "save_png_atomic"]

CAPTION_HEIGHT = 18
GAP = 4
OUTLINE_RGB = (255, 40, 40)


def _to_rgb_uint8(image: torch.Tensor) -> np.ndarray:
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array


def _outlined(image: np.ndarray, mask: torch.Tensor) -> np.ndarray:
    """The image with the mask's boundary drawn in red (2 px)."""
    binary = (mask[0].cpu().numpy() > 0.5).astype(np.uint8)
    edge = cv2.morphologyEx(binary, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    out = image.copy()
    out[edge] = OUTLINE_RGB
    return out


def _grid_shape(n: int, size: int, columns: int) -> tuple[int, int, int, int]:
    """Columns, rows and the canvas's width and height for ``n`` cells of side ``size``."""
    columns = min(columns, n)
    rows = -(-n // columns)
    cell_w, cell_h = 3 * size + 2 * GAP, size + CAPTION_HEIGHT
    return columns, rows, columns * (cell_w + 3 * GAP), rows * (cell_h + GAP)


def check_grid(n: int, size: int, columns: int = 4) -> None:
    """Validate the sample count and image side (the CLI does so before loading any data).

    A grid larger than Pillow opens (twice ``Image.MAX_IMAGE_PIXELS``, its decompression-bomb
    limit) is refused: it would exhaust memory while being drawn, or be unreadable once written.
    """
    for name, value in (("n", n), ("size", size), ("columns", columns)):
        # A float or bool would pass the range checks and fail later in range() or Pillow.
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if size < 8:
        raise ValueError(f"size must be at least 8 px, got {size}")
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    width, height = _grid_shape(n, size, columns)[2:]
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > 2 * limit:
        raise ValueError(
            f"a grid of {n} samples at size {size} would be {width}x{height} px, more than "
            f"Pillow opens ({2 * limit:,} px); lower -n or --size"
        )


def _check_paths(image_paths: Sequence[str | Path]) -> list[Path]:
    """``image_paths`` as a non-empty list of Paths: one path (whose characters a str would
    give as "images") or an empty list is an error, not a failure deep in the drawing."""
    if isinstance(image_paths, str | Path) or not isinstance(image_paths, Sequence):
        raise ValueError(
            f"image_paths must be a list of image files (list_images gives one), got "
            f"{image_paths!r:.80}"
        )
    if not image_paths:
        raise ValueError("image_paths is empty: a preview needs at least one image file")
    for i, path in enumerate(image_paths):
        if not isinstance(path, str | Path):
            raise ValueError(f"image_paths[{i}] must be a str or Path, got {path!r:.80}")
    return [Path(path) for path in image_paths]


def render_preview(
    image_paths: Sequence[Path],
    transform: AnomalyTransform,
    n: int = 16,
    size: int = 256,
    seed: int = 0,
    columns: int = 4,
) -> Image.Image:
    """A grid of ``n`` samples; each cell shows source | synthesized | mask outline + caption.

    Images are drawn from ``image_paths`` (image files, e.g. from ``list_images``) in a
    seeded order, cycling when fewer than ``n``; an empty list is an error.
    """
    image_paths = _check_paths(image_paths)
    if not isinstance(transform, AnomalyTransform):
        raise ValueError(f"transform must be an anomgen transform, got {type(transform).__name__}")
    check_grid(n, size, columns)
    n, size, columns = int(n), int(size), int(columns)
    check_seed(seed)
    order = torch.randperm(len(image_paths), generator=torch.Generator().manual_seed(seed))
    cell_w, cell_h = 3 * size + 2 * GAP, size + CAPTION_HEIGHT
    columns, _, width, height = _grid_shape(n, size, columns)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for k in range(n):
        path = image_paths[int(order[k % len(image_paths)])]
        source = resize(read_image(path), (size, size))
        result = transform(source, seed=derive_seed(seed, k))
        tiles = [
            _to_rgb_uint8(source),
            _to_rgb_uint8(result.image),
            _outlined(_to_rgb_uint8(result.image), result.mask),
        ]
        x0 = (k % columns) * (cell_w + 3 * GAP)
        y0 = (k // columns) * (cell_h + GAP)
        for t, tile in enumerate(tiles):
            canvas.paste(Image.fromarray(tile), (x0 + t * (size + GAP), y0))
        label = "anomalous" if result.meta["anomalous"] else "normal"
        caption = f"{result.meta['strategy']} ({label}) - {path.name}"
        draw.text((x0 + 2, y0 + size + 3), caption[: 3 * size // 6], fill="black")
    return canvas


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def folder_problem(folder: Path) -> str | None:
    """Why ``folder`` can be neither used nor made (it, or one of its parents, is a file or
    a broken link), or None: callers name that rather than report a missing folder or
    ``[Errno 17] File exists``."""
    for candidate in (folder, *folder.parents):
        if candidate.is_dir():
            return None
        if candidate.exists() or candidate.is_symlink():
            kind = "a file" if candidate.exists() else "a broken link"
            if candidate == folder:
                return f"is {kind}, not a folder"
            return f"cannot exist: {str(candidate)!r} is {kind}"
    return None


def check_output_folder(folder: Path, what: str = "output folder") -> None:
    """Raise unless ``folder`` exists and is a folder, saying which of the two it is not."""
    problem = folder_problem(folder)
    if problem is not None:
        raise NotADirectoryError(f"{what} {str(folder)!r} {problem}")
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} {str(folder)!r} does not exist")


def check_png_path(out: str | Path) -> Path:
    """``out`` as a Path if a PNG can be written there (checked before any work is done)."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"output must be a .png file, got {str(out)!r}")
    check_output_folder(out.parent)
    if out.is_dir():
        raise IsADirectoryError(f"output {str(out)!r} is a folder")
    return out


def save_png_atomic(image: Image.Image, out: str | Path) -> Path:
    """Write the PNG through a temporary file and rename, so no half-written file remains."""
    out = check_png_path(out)
    handle, tmp = tempfile.mkstemp(suffix=".png.tmp", dir=out.parent)
    os.close(handle)
    try:
        image.save(tmp, format="PNG")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
