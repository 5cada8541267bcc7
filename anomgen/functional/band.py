"""Band-shaped regions that reach in from one image edge.

Some defects are not blobs but bands: a ground or polished strip along one side of a part
whose texture differs from the rest (the ``Uneven`` class of the Magnetic Tile Defect data:
80 of its 99 non-empty masks touch the tile's top or bottom edge). This module draws such
masks deterministically from explicit parameters.
"""

from __future__ import annotations

import math

import torch

__all__ = ["EDGE_SIDES", "edge_band_mask"]

EDGE_SIDES = ("top", "bottom", "left", "right")


def _smooth_profile(length: int, knots: torch.Tensor) -> torch.Tensor:
    """Cosine interpolation of ``knots`` (values at evenly spaced points) over ``length`` px."""
    cells = knots.numel() - 1
    position = (torch.arange(length, dtype=torch.float32) + 0.5) / length * cells
    left = position.floor().clamp_(max=cells - 1).long()
    t = position - left
    weight = (1 - torch.cos(math.pi * t)) / 2
    return knots[left] * (1 - weight) + knots[left + 1] * weight


def edge_band_mask(
    size: tuple[int, int],
    side: str,
    depth: float,
    tilt: float = 0.0,
    span: tuple[float, float] = (0.0, 1.0),
    waviness: float = 0.0,
    wave_cells: int = 4,
    noise_seed: int = 0,
) -> torch.Tensor:
    """(1, H, W) binary float mask of a band along ``side``.

    The band's inner boundary lies ``depth`` (a fraction of the image across the edge) from
    the edge in the middle, rises or falls by ``tilt`` from one end of the edge to the
    other and wanders by up to ``waviness`` along a smooth random profile with
    ``wave_cells`` cells (``noise_seed`` picks it). Along the edge the band covers the
    fractions ``span = (start, end)``.
    """
    height, width = int(size[0]), int(size[1])
    if height < 2 or width < 2:
        raise ValueError(f"mask size must be at least 2x2, got {size!r}")
    if side not in EDGE_SIDES:
        raise ValueError(f"side must be one of {EDGE_SIDES}, got {side!r}")
    if not 0.0 < float(depth) <= 1.0:
        raise ValueError(f"depth must be in (0, 1], got {depth!r}")
    start, end = (float(v) for v in span)
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"span must satisfy 0 <= start < end <= 1, got {span!r}")
    if not 0.0 <= float(waviness) <= 1.0:
        raise ValueError(f"waviness must be in [0, 1], got {waviness!r}")
    if not math.isfinite(float(tilt)):  # NaN would give an empty mask, not an error
        raise ValueError(f"tilt must be a finite number, got {tilt!r}")
    if isinstance(wave_cells, bool) or not isinstance(wave_cells, int) or wave_cells < 1:
        raise ValueError(f"wave_cells must be a positive integer, got {wave_cells!r}")
    along, across = (width, height) if side in ("top", "bottom") else (height, width)
    generator = torch.Generator().manual_seed(int(noise_seed))
    knots = torch.rand(wave_cells + 1, generator=generator) * 2 - 1
    u = (torch.arange(along, dtype=torch.float32) + 0.5) / along
    boundary = depth + tilt * (u - 0.5) + waviness * _smooth_profile(along, knots)
    v = (torch.arange(across, dtype=torch.float32) + 0.5) / across
    inside = (v[:, None] < boundary[None, :]) & ((u >= start) & (u <= end))[None, :]
    if side in ("left", "right"):
        inside = inside.T
    if side == "bottom":
        inside = inside.flip(0)
    elif side == "right":
        inside = inside.flip(1)
    return inside.float()[None]
