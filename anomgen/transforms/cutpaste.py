"""CutPaste and CutPaste-Scar (Li et al., CVPR 2021) as sampled transforms.

Defaults follow the paper's reference code: a rectangle of 2-15 % of the image with a
log-uniform aspect ratio in (0.3, 3.3); a scar 2-16 px wide and 10-25 px long (at 256 px)
rotated by up to 45 degrees; both colour-jittered like ``ColorJitter(0.1, 0.1, 0.1, 0.1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from anomgen.core import (
    AnomalyTransform,
    check_int,
    check_range,
    finite_number,
    random_int,
    random_uniform,
    register,
)
from anomgen.functional.cutpaste import cut_paste, cut_paste_scar, strip_extent

__all__ = ["CutPaste", "CutPasteScar", "sample_jitter"]


def sample_jitter(generator: torch.Generator, strength: float) -> dict[str, Any] | None:
    """Factors of torchvision's ``ColorJitter(s, s, s, s)`` (None when ``strength`` is 0)."""
    if strength == 0:
        return None
    low, high = max(0.0, 1.0 - strength), 1.0 + strength
    return {
        "brightness": random_uniform(generator, low, high),
        "contrast": random_uniform(generator, low, high),
        "saturation": random_uniform(generator, low, high),
        "hue": random_uniform(generator, -strength, strength),
        "order": torch.randperm(4, generator=generator).tolist(),
    }


def _uniform_within(generator: torch.Generator, margin: float, size: int) -> float:
    """A centre coordinate keeping ``margin`` from both edges (the middle if impossible)."""
    return random_uniform(generator, margin, size - margin) if 2 * margin <= size else size / 2


@register
@dataclass
class CutPaste(AnomalyTransform):
    """A colour-jittered rectangle of the image pasted at another random place.

    The box covers ``area_ratio`` of the image with width/height drawn log-uniformly in
    ``aspect_ratio``. On very elongated images the aspect range is narrowed to the boxes
    that fit (and, only when none fits, clamped to the nearest that does). The mask is
    the pasted box restricted to pixels that changed.
    """

    area_ratio: tuple[float, float] = (0.02, 0.15)
    aspect_ratio: tuple[float, float] = (0.3, 3.3)
    color_jitter: float = 0.1
    param_keys = ("box_src", "box_dst", "jitter")

    def __post_init__(self) -> None:
        self.area_ratio = check_range("area_ratio", self.area_ratio, 0.0, 1.0)
        if self.area_ratio[0] <= 0:
            raise ValueError(f"area_ratio must be positive, got {self.area_ratio!r}")
        self.aspect_ratio = check_range("aspect_ratio", self.aspect_ratio, 0.0, math.inf)
        if self.aspect_ratio[0] <= 0 or math.isinf(self.aspect_ratio[1]):
            raise ValueError(f"aspect_ratio must be positive and finite, got {self.aspect_ratio!r}")
        self.color_jitter = finite_number("color_jitter", self.color_jitter, 0.0, 0.5)

    def sample_params(self, image: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        height, width = image.shape[-2:]
        area = random_uniform(generator, *self.area_ratio)
        # width/height ratios whose box fits: w = sqrt(a*H*W*r) <= W and h = sqrt(a*H*W/r) <= H.
        fit_low, fit_high = area * width / height, width / (area * height)
        low = min(max(self.aspect_ratio[0], fit_low), fit_high)
        high = max(min(self.aspect_ratio[1], fit_high), fit_low)
        aspect = math.exp(random_uniform(generator, math.log(low), math.log(high)))
        pixels = area * height * width
        box_h = min(height, max(1, round(math.sqrt(pixels / aspect))))
        box_w = min(width, max(1, round(math.sqrt(pixels * aspect))))
        boxes = [
            [random_int(generator, 0, height - box_h), random_int(generator, 0, width - box_w)]
            for _ in range(2)
        ]
        return {
            "area_ratio": area,
            "aspect_ratio": aspect,
            "box_src": [*boxes[0], box_h, box_w],
            "box_dst": [*boxes[1], box_h, box_w],
            "jitter": sample_jitter(generator, self.color_jitter),
        }

    def apply(
        self, image: torch.Tensor, params: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return cut_paste(image, params["box_src"], params["box_dst"], params["jitter"])


@register
@dataclass
class CutPasteScar(AnomalyTransform):
    """A thin colour-jittered strip of the image, rotated and pasted elsewhere.

    ``width`` and ``length`` are pixel ranges at ``reference_size``; they scale with the
    image's shorter side (never below 1 px) so a scar keeps its relative size on any
    resolution. The angle is drawn from ``rotation`` (degrees) and the rotated strip is
    placed wholly inside the image where it fits (else centred, its ends cut off). The mask
    is the strip's footprint where it changed.
    """

    width: tuple[float, float] = (2, 16)
    length: tuple[float, float] = (10, 25)
    reference_size: int = 256
    rotation: tuple[float, float] = (-45.0, 45.0)
    color_jitter: float = 0.1
    param_keys = ("box_src", "center_dst", "angle", "jitter")

    def __post_init__(self) -> None:
        self.reference_size = check_int("reference_size", self.reference_size, 1)
        self.width = check_range("width", self.width, 1.0, float("inf"))
        self.length = check_range("length", self.length, 1.0, float("inf"))
        for name, bounds in (("width", self.width), ("length", self.length)):
            if bounds[1] > self.reference_size:
                raise ValueError(
                    f"{name}={bounds!r} is longer than reference_size={self.reference_size}: "
                    "width and length are pixel ranges on an image of that size"
                )
        self.rotation = check_range("rotation", self.rotation, -360.0, 360.0)
        self.color_jitter = finite_number("color_jitter", self.color_jitter, 0.0, 0.5)

    def pixel_ranges(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """Integer (width, length) ranges of a scar on a ``height`` x ``width`` image."""
        scale = min(height, width) / self.reference_size

        def scaled(bounds: tuple[float, float], limit: int) -> tuple[int, int]:
            low = min(limit, max(1, round(bounds[0] * scale)))
            return low, min(limit, max(low, round(bounds[1] * scale)))

        return scaled(self.width, width), scaled(self.length, height)

    def sample_params(self, image: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        height, width = image.shape[-2:]
        width_range, length_range = self.pixel_ranges(height, width)
        strip_w = random_int(generator, *width_range)
        length = random_int(generator, *length_range)
        angle = random_uniform(generator, *self.rotation)
        extent_y, extent_x = strip_extent(length, strip_w, angle)
        return {
            "box_src": [
                random_int(generator, 0, height - length),
                random_int(generator, 0, width - strip_w),
                length,
                strip_w,
            ],
            "center_dst": [
                _uniform_within(generator, extent_y, height),
                _uniform_within(generator, extent_x, width),
            ],
            "angle": angle,
            "jitter": sample_jitter(generator, self.color_jitter),
        }

    def apply(
        self, image: torch.Tensor, params: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return cut_paste_scar(
            image, params["box_src"], params["center_dst"], params["angle"], params["jitter"]
        )
