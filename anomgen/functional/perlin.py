"""Vectorised, batched 2-D Perlin noise in torch.

Perlin noise is a sum over lattice nodes of a gradient times separable functions of x
and y (the fade weights and the displacement to the node), so a whole field is two
small matrix products::

    noise = Wy @ Gx @ Dx.T + Dy @ Gy @ Wx.T

with ``W*`` the per-axis fade weights, ``D*`` the weights times the displacement and
``G*`` the gradient components on the lattice. The per-axis matrices depend only on
the size and lattice resolution and are cached. The field is evaluated on a square
canvas that covers the image at any rotation, at ``SAMPLES_PER_CELL`` points per
lattice cell (noise is smooth inside a cell), and one ``grid_sample`` rotates it and
resamples it to the image size (OpenCV's warpAffine on the CPU, which is several
times faster than building the sampling grid). No Python loop touches pixels; samples of a batch
that share a canvas grid are computed together with batched matrix products.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import cv2
import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["SAMPLES_PER_CELL", "perlin_noise"]

SAMPLES_PER_CELL = 8
MAX_SAMPLES_PER_PIXEL = 4
MAX_CELLS = 256


@lru_cache(maxsize=512)
def _axis_basis(points: int, extent: float, cell: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Fade weights and weighted displacements, each (points, nodes), along one axis."""
    position = (torch.arange(points, dtype=torch.float64) + 0.5) * (extent / points)
    t = position / cell
    node = torch.floor(t)
    frac = t - node
    fade = frac**3 * (frac * (frac * 6 - 15) + 10)
    nodes = int(math.floor(extent / cell)) + 2
    weight = torch.zeros((points, nodes), dtype=torch.float64)
    displacement = torch.zeros_like(weight)
    rows = torch.arange(points)
    left, right = node.long(), node.long() + 1
    weight[rows, left] = 1 - fade
    weight[rows, right] = fade
    displacement[rows, left] = (1 - fade) * frac
    displacement[rows, right] = fade * (frac - 1)
    return weight.float(), displacement.float()


def _canvas_points(extent: float, cell: float) -> int:
    """Canvas samples along an axis: ``SAMPLES_PER_CELL`` per lattice cell (at least 2), at
    most ``MAX_SAMPLES_PER_PIXEL`` per pixel.

    Cells of 8 px and more get one sample per pixel or fewer. Smaller cells (an image side
    below 256 px at DRAEM's 32 cells) get 8 samples per cell too, so cells of 2 px and more
    keep them: capping at one sample per pixel (as anomgen did before) smoothed such
    noise so much that a 64 px image at 32 cells kept a quarter of the mask pixels that the
    same noise evaluated at each pixel gives.
    """
    wanted = math.ceil(SAMPLES_PER_CELL * extent / cell)
    return max(2, min(wanted, math.ceil(MAX_SAMPLES_PER_PIXEL * extent)))


@lru_cache(maxsize=64)
def _pixel_offsets(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre offsets from the image centre, as (H,1) and (1,W)."""
    ys = torch.arange(height, dtype=torch.float32) + 0.5 - height / 2
    xs = torch.arange(width, dtype=torch.float32) + 0.5 - width / 2
    return ys.view(height, 1), xs.view(1, width)


def perlin_noise(
    size: tuple[int, int],
    lattice: Sequence[tuple[int, int]],
    angles_deg: Sequence[float],
    seeds: Sequence[int],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Perlin noise fields of shape (B, H, W), values roughly in [-1, 1].

    ``lattice[i] = (cells_y, cells_x)`` sets how many lattice cells span the image height
    and width (DRAEM draws 2^0..2^5 per axis), ``angles_deg[i]`` rotates the field about
    the image centre and ``seeds[i]`` picks its gradients. Values are scaled by sqrt(2),
    as in DRAEM, so its threshold of 0.5 keeps a comparable share of pixels.
    """
    height, width = int(size[0]), int(size[1])
    n = len(lattice)
    if not (len(angles_deg) == len(seeds) == n):
        raise ValueError(f"got {n} lattices, {len(angles_deg)} angles and {len(seeds)} seeds")
    if height < 2 or width < 2:
        raise ValueError(f"noise size must be at least 2x2, got {size}")
    for cells in lattice:
        if len(cells) != 2 or not all(
            isinstance(c, int | np.integer) and not isinstance(c, bool) and 1 <= c <= MAX_CELLS
            for c in cells
        ):
            raise ValueError(f"lattice cells must be integers 1..{MAX_CELLS} per axis, got {cells}")
    if not all(math.isfinite(float(angle)) for angle in angles_deg):  # NaN: an all-NaN field
        raise ValueError(f"angles must be finite, got {list(angles_deg)!r}")
    extent = math.hypot(height, width)  # the canvas side that covers any rotation
    plans = []
    for (cells_y, cells_x), seed in zip(lattice, seeds):
        cell_y, cell_x = height / int(cells_y), width / int(cells_x)
        plans.append(
            (
                _canvas_points(extent, cell_y),
                _canvas_points(extent, cell_x),
                cell_y,
                cell_x,
                int(seed),
            )
        )
    # Samples with the same lattice share their basis matrices and run as one batched
    # product; grouping by the exact plan keeps each result independent of its batch.
    groups: dict[tuple[int, int, float, float], list[int]] = {}
    for i, plan in enumerate(plans):
        groups.setdefault(plan[:4], []).append(i)
    out = torch.empty((n, height, width), device=device)
    on_cpu = torch.device(device).type == "cpu"
    grid = None if on_cpu else _rotation_grid(height, width, extent, angles_deg, device)
    for members in groups.values():
        canvas = _canvas([plans[i] for i in members], extent, device)
        if grid is not None:
            out[members] = F.grid_sample(
                canvas[:, None],
                grid[members],
                mode="bilinear",
                padding_mode="border",
                align_corners=False,
            )[:, 0]
            continue
        # On the CPU OpenCV's warp is several times faster than building a sampling grid.
        for row, i in zip(canvas.numpy(), members):
            matrix = _inverse_warp(height, width, extent, row.shape, float(angles_deg[i]))
            out[i] = torch.from_numpy(
                cv2.warpAffine(
                    row,
                    matrix,
                    (width, height),
                    flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                    borderMode=cv2.BORDER_REPLICATE,
                )
            )
    return out


def _inverse_warp(
    height: int, width: int, extent: float, canvas_shape: tuple[int, int], angle_deg: float
) -> np.ndarray:
    """The 2x3 map from image pixels to canvas pixels (the same map as ``_rotation_grid``)."""
    theta = math.radians(angle_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    scale_y, scale_x = canvas_shape[0] / extent, canvas_shape[1] / extent
    x0, y0 = 0.5 - width / 2, 0.5 - height / 2
    return np.array(
        [
            [
                scale_x * cos,
                -scale_x * sin,
                scale_x * (cos * x0 - sin * y0 + extent / 2) - 0.5,
            ],
            [
                scale_y * sin,
                scale_y * cos,
                scale_y * (sin * x0 + cos * y0 + extent / 2) - 0.5,
            ],
        ],
        dtype=np.float64,
    )


def _canvas(plans: list[tuple[int, int, float, float, int]], extent: float, device) -> torch.Tensor:
    """Unrotated noise on the canvas grid for samples that share one lattice plan."""
    weight_y, disp_y = (m.to(device) for m in _axis_basis(plans[0][0], extent, plans[0][2]))
    weight_x, disp_x = (m.to(device) for m in _axis_basis(plans[0][1], extent, plans[0][3]))
    nodes_y, nodes_x = weight_y.shape[1], weight_x.shape[1]
    angles = torch.stack(
        [
            torch.rand((nodes_y, nodes_x), generator=torch.Generator().manual_seed(p[4]))
            for p in plans
        ]
    ).to(device) * (2 * math.pi)
    grad_x, grad_y = torch.cos(angles), torch.sin(angles)
    # One product instead of two: [Wy Gx | Dy Gy] @ [Dx | Wx].T
    left = torch.cat((weight_y @ grad_x, disp_y @ grad_y), dim=2)
    right = torch.cat((disp_x, weight_x), dim=1).T
    return (left @ right) * math.sqrt(2)


def _rotation_grid(
    height: int, width: int, extent: float, angles_deg: Sequence[float], device
) -> torch.Tensor:
    """grid_sample coordinates: each image pixel, rotated, in the canvas's [-1, 1] frame."""
    ys, xs = _pixel_offsets(height, width)
    theta = torch.deg2rad(torch.tensor([float(a) for a in angles_deg])).view(-1, 1, 1)
    cos, sin = torch.cos(theta), torch.sin(theta)
    scale = 2.0 / extent
    u = (xs * cos - ys * sin) * scale
    v = (xs * sin + ys * cos) * scale
    return torch.stack((u, v), dim=-1).to(device)
