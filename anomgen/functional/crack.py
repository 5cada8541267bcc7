"""Cracks: long, thin, dark lines that wander about one direction and may branch.

Real cracks in ceramics and castings are not the short straight scratches of
``corruptions.scratch``: they run for a sizeable part of the part, mostly along one
direction (MTD's ``Crack`` masks: a median 0.18 of the image diagonal, 3 px wide, 58 %
within 10 degrees of vertical) and darken the surface by a quarter to a third
without hiding its texture. This module turns explicit geometry into such lines.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

from anomgen.core import finite_number
from anomgen.functional.corruptions import draw_scratches
from anomgen.functional.photometric import check_image

__all__ = ["crack", "crack_path"]


def crack_path(
    start: Sequence[float], length: float, headings: Sequence[float]
) -> list[list[float]]:
    """Polyline ``[[x, y], ...]`` from ``start`` in ``len(headings)`` equal steps,
    ``length`` px in all; step k heads ``headings[k]`` degrees (0 along +x, 90 along +y,
    i.e. down the image)."""
    if isinstance(start, str | bytes) or len(start) != 2:
        raise ValueError(f"start must be (x, y), got {start!r}")
    x0, y0 = (finite_number("start", v) for v in start)
    length = finite_number("length", length, 0.0)
    if isinstance(headings, str | bytes) or len(headings) == 0:
        raise ValueError(f"headings must hold at least one angle, got {headings!r}")
    angles = np.radians([finite_number("headings", h) for h in headings])
    step = length / len(angles)
    points = np.full((len(angles) + 1, 2), [x0, y0])
    points[1:, 0] += np.cumsum(step * np.cos(angles))
    points[1:, 1] += np.cumsum(step * np.sin(angles))
    return points.tolist()


def crack(
    img: Tensor, lines: Sequence[Sequence[Sequence[float]]], thickness: int, depth: float
) -> tuple[Tensor, Tensor]:
    """Darken ``img`` under the anti-aliased polylines ``lines`` by the fraction ``depth``.

    Multiplicative (``img * (1 - depth * coverage)``), so the texture stays visible through
    the crack as it does on real parts. Returns ``(image, mask)``; the (1,H,W) mask marks
    every pixel the lines touch, so pixels outside it are bit-identical to ``img``.
    """
    check_image(img)
    depth = finite_number("depth", depth, 0.0, 1.0)
    coverage = draw_scratches(img.shape, lines, thickness, device=img.device, dtype=img.dtype)
    # Where coverage is 0 the factor is exactly 1.0, which leaves those pixels bit-identical.
    return img * (1.0 - depth * coverage), (coverage > 0).to(img.dtype)
