"""Cheap local corruptions on (C,H,W) float tensors in [0, 1].

Each op returns the corrupted *full* image (a new tensor of the same shape, dtype and
device, clamped to [0, 1]); the transform that uses it decides where it shows by blending
inside a mask. Every parameter is explicit; the only randomness, the noise field of
``gaussian_noise``, comes from an integer seed. ``scratch`` also returns the mask of the
lines it drew.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from anomgen.core import check_int, finite_number
from anomgen.functional.photometric import _untracked_values, check_image

__all__ = ["color_shift", "draw_scratches", "gaussian_blur", "gaussian_noise", "scratch"]

# Line coordinates go to OpenCV in fixed point with this many fractional bits (1/16 pixel).
_SUBPIXEL_BITS = 4
_MAX_COORDINATE = 2.0**20
_MAX_THICKNESS = 1024


def gaussian_noise(img: Tensor, sigma: float, seed: int) -> Tensor:
    """Add zero-mean Gaussian noise of standard deviation ``sigma`` ([0, 1] units).

    The noise field comes from a ``torch.Generator`` on the image's device seeded with
    ``seed``: the same seed gives the same field on one device, but the CPU and CUDA
    generators are different streams, so a CPU and a GPU run do not match.
    """
    check_image(img)
    sigma = finite_number("sigma", sigma, 0.0)
    seed = check_int("seed", seed, 0, 2**64 - 1)
    if sigma == 0.0:
        return img.clone()
    generator = torch.Generator(device=img.device)
    generator.manual_seed(seed)
    noise = torch.randn(img.shape, generator=generator, dtype=img.dtype, device=img.device)
    # Summed into the noise buffer, saving an image-sized allocation, unless autograd tracks
    # ``img``: it refuses out= arguments, so the sum (bit-identical) gets a fresh tensor.
    out = None if img.requires_grad else noise
    return torch.add(img, noise, alpha=sigma, out=out).clamp_(0.0, 1.0)


def _gaussian_taps(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian kernel, truncated at ceil(3 sigma) (at least one tap each side)."""
    radius = max(1, math.ceil(3.0 * sigma))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (offsets / sigma) ** 2)
    return taps / taps.sum()


def _reflect_indices(size: int, radius: int, device: torch.device) -> Tensor:
    """Source indices of an axis padded by mirroring about its end pixels.

    ``... x2 x1 | x0 x1 ... xn | xn-1 ...`` (OpenCV's BORDER_REFLECT_101, torch's "reflect"),
    folding back and forth for pads longer than the axis.
    """
    positions = torch.arange(-radius, size + radius, device=device)
    if size == 1:
        return torch.zeros_like(positions)
    period = 2 * (size - 1)
    folded = positions.remainder(period)
    return torch.minimum(folded, period - folded)


@_untracked_values
def gaussian_blur(img: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur with reflect padding (no edge darkening).

    The kernel spans ``2 * ceil(3 sigma) + 1`` taps; ``sigma = 0`` returns a copy. Pads
    wider than the image keep reflecting back and forth, as OpenCV does.
    """
    check_image(img)
    sigma = finite_number("sigma", sigma, 0.0, 1000.0)
    if sigma == 0.0:
        return img.clone()
    taps = _gaussian_taps(sigma)
    channels, height, width = img.shape
    if img.device.type == "cpu" and img.dtype == torch.float32 and not img.requires_grad:
        planes = img.contiguous().numpy()
        kernel = taps.astype(np.float32)
        out = np.empty_like(planes)
        for plane, dst in zip(planes, out):
            cv2.sepFilter2D(plane, -1, kernel, kernel, dst=dst, borderType=cv2.BORDER_REFLECT_101)
        return torch.from_numpy(out).clamp_(0.0, 1.0)
    radius = len(taps) // 2
    weights = torch.tensor(taps, dtype=img.dtype).to(img.device, non_blocking=True)
    rows = img.index_select(2, _reflect_indices(width, radius, img.device))
    rows = F.conv2d(
        rows[None], weights.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels
    )
    cols = rows[0].index_select(1, _reflect_indices(height, radius, img.device))
    out = F.conv2d(
        cols[None], weights.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels
    )
    return out[0].clamp_(0.0, 1.0)


def color_shift(img: Tensor, offsets: Sequence[float]) -> Tensor:
    """Add ``offsets[c]`` (in [-1, 1], [0, 1] units) to channel c."""
    check_image(img)
    channels = img.shape[0]
    if isinstance(offsets, str | bytes) or not isinstance(offsets, Sequence | Tensor):
        raise ValueError(f"offsets must be a sequence of {channels} numbers, got {offsets!r}")
    if len(offsets) != channels:
        raise ValueError(f"offsets needs one value per channel ({channels}), got {list(offsets)}")
    values = [finite_number("offsets", v, -1.0, 1.0) for v in offsets]
    shift = torch.tensor(values, dtype=img.dtype).to(img.device, non_blocking=True)
    shift = shift.view(channels, 1, 1)
    return (img + shift).clamp_(0.0, 1.0)


def _polylines(lines: Any) -> list[np.ndarray]:
    if isinstance(lines, str | bytes) or not isinstance(lines, Sequence | np.ndarray):
        raise ValueError(f"lines must be a list of polylines [[x, y], ...], got {lines!r:.80}")
    if len(lines) == 0:
        raise ValueError("lines must hold at least one polyline")
    polylines = []
    for i, line in enumerate(lines):
        try:
            points = np.asarray(line, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"polyline {i} must be [[x, y], ...] numbers, got {line!r:.80}"
            ) from None
        if points.ndim != 2 or points.shape[0] < 2 or points.shape[1] != 2:
            raise ValueError(f"polyline {i} needs at least two [x, y] points, got {line!r:.80}")
        if not np.isfinite(points).all() or np.abs(points).max() > _MAX_COORDINATE:
            raise ValueError(f"polyline {i} has non-finite or huge coordinates: {line!r:.80}")
        fixed = np.round(points * (1 << _SUBPIXEL_BITS)).astype(np.int32)
        polylines.append(fixed.reshape(-1, 1, 2))
    return polylines


def draw_scratches(
    img_shape: Sequence[int],
    lines: Sequence[Sequence[Sequence[float]]],
    thickness: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Anti-aliased polylines as a (1,H,W) mask in [0, 1] (``dtype`` on ``device``).

    ``img_shape`` is (H, W) or (C, H, W). Each polyline is ``[[x, y], ...]`` in pixel
    coordinates (x right, y down, pixel centres at integers), drawn with OpenCV at 1/16
    pixel precision; parts outside the image are clipped.
    """
    if (
        isinstance(img_shape, str | bytes)
        or not isinstance(img_shape, Sequence | torch.Size)
        or len(img_shape) not in (2, 3)
    ):
        raise ValueError(f"img_shape must be (H, W) or (C, H, W), got {img_shape!r}")
    height = check_int("height", img_shape[-2], 1, 2**16)
    width = check_int("width", img_shape[-1], 1, 2**16)
    thickness = check_int("thickness", thickness, 1, _MAX_THICKNESS)
    canvas = np.zeros((height, width), np.uint8)
    cv2.polylines(
        canvas,
        _polylines(lines),
        isClosed=False,
        color=255,
        thickness=thickness,
        lineType=cv2.LINE_AA,
        shift=_SUBPIXEL_BITS,
    )
    return torch.from_numpy(canvas).to(device=device, dtype=dtype).div_(255.0)[None]


def scratch(
    img: Tensor,
    lines: Sequence[Sequence[Sequence[float]]],
    thickness: int,
    intensity: float,
) -> tuple[Tensor, Tensor]:
    """Draw scratches: pull the pixels under the lines towards ``intensity`` (0 dark, 1 bright).

    Returns ``(image, mask)``: ``image = img + mask * (intensity - img)`` with the (1,H,W)
    anti-aliased line mask of ``draw_scratches``, so pixels off the lines are untouched.
    """
    check_image(img)
    intensity = finite_number("intensity", intensity, 0.0, 1.0)
    mask = draw_scratches(img.shape, lines, thickness, device=img.device, dtype=img.dtype)
    out = torch.addcmul(img, mask, torch.rsub(img, intensity))
    return out.clamp_(0.0, 1.0), mask
