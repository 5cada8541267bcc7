"""NSA-style Poisson patches (Schlueter et al., "Natural Synthetic Anomalies", ECCV 2022).

A rectangle from another normal image (or elsewhere in the same one) is blended in with
Poisson image editing, so it carries the source's texture and structure but takes on
the target's brightness: a subtle, "natural" local irregularity instead of a pasted
foreign block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from anomgen.core import (
    AnomalyTransform,
    check_bool,
    check_range,
    random_int,
    random_uniform,
    register,
)
from anomgen.functional.blend import poisson_blend
from anomgen.functional.cutpaste import check_box
from anomgen.io import TexturePool, check_texture, resize, texture_pool
from anomgen.transforms.seen import check_foreground, sample_position

__all__ = ["PoissonPatch"]


@register
@dataclass
class PoissonPatch(AnomalyTransform):
    """A rectangle of a normal image, optionally rescaled, Poisson-blended into the image.

    ``sources`` is a folder of normal images (decoded once into memory as a
    ``TexturePool`` and resized to each target's size, so a patch keeps its scale), a
    ``TexturePool``, or None to take the rectangle from the image itself at another
    random place. The rectangle's ``width`` and ``height`` are fractions of the image's,
    drawn uniformly (0.1-0.4; NSA draws half-widths of 0.03 + Gamma(2, 0.05), clipped to
    per-class bounds of mostly 0.03-0.4), then it is rescaled, keeping its aspect ratio, by
    a factor drawn uniformly from ``rescale`` (NSA: clip(N(1, 0.5), 0.7, 1.3); (1, 1) turns
    it off). Its centre lands on a random pixel of the foreground (``foreground``,
    ``foreground_threshold``, ``foreground_invert`` as in ``SeenAnomalyPaste``); parts
    outside the image are dropped (NSA keeps the patch inside). One patch per sample (NSA:
    up to 3-4); NSA's median-filtered and intensity-based labels are replaced by a binary
    mask of the pixels that changed by more than one grey level (which can reach a few
    pixels beyond the rectangle, where the blend evens out the brightness); every other
    pixel is untouched. docs/anomgen.md lists the differences from NSA's code.
    """

    sources: str | Path | TexturePool | None = None
    width: tuple[float, float] = (0.1, 0.4)
    height: tuple[float, float] = (0.1, 0.4)
    rescale: tuple[float, float] = (0.7, 1.3)
    foreground: str = "none"
    foreground_threshold: float | None = None
    foreground_invert: bool = False
    _pool: TexturePool | None = field(init=False, repr=False, compare=False)
    param_keys = ("source", "box", "rescale", "center")

    def __post_init__(self) -> None:
        self.width = check_range("width", self.width, 0.0, 1.0)
        self.height = check_range("height", self.height, 0.0, 1.0)
        if self.width[0] <= 0 or self.height[0] <= 0:
            raise ValueError(f"width and height must be positive, got {self.width}, {self.height}")
        self.rescale = check_range("rescale", self.rescale, 0.01, 100.0)
        self.foreground_threshold = check_foreground(self.foreground, self.foreground_threshold)
        self.foreground_invert = check_bool("foreground_invert", self.foreground_invert)
        self._pool = texture_pool(self.sources, "sources")
        if isinstance(self.sources, Path):
            self.sources = str(self.sources)

    def sample_params(self, image: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        height, width = image.shape[-2:]
        source = -1 if self._pool is None else random_int(generator, 0, len(self._pool) - 1)
        box_h = min(height, max(1, round(random_uniform(generator, *self.height) * height)))
        box_w = min(width, max(1, round(random_uniform(generator, *self.width) * width)))
        return {
            "source": source,
            "box": [
                random_int(generator, 0, height - box_h),
                random_int(generator, 0, width - box_w),
                box_h,
                box_w,
            ],
            "rescale": random_uniform(generator, *self.rescale),
            "center": sample_position(
                image, generator, self.foreground, self.foreground_threshold, self.foreground_invert
            ),
        }

    def apply(
        self, image: torch.Tensor, params: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        channels, height, width = image.shape
        top, left, box_h, box_w = check_box("box", params["box"], height, width)
        index = check_texture(params["source"], self._pool, "source")
        if index < 0:
            source = image
        else:
            source = self._pool.get(index, (height, width), channels, image.device)
        patch = source[:, top : top + box_h, left : left + box_w]
        size = (max(1, round(box_h * params["rescale"])), max(1, round(box_w * params["rescale"])))
        patch = resize(patch, size).clamp(0, 1)
        mask = torch.ones_like(patch[:1])
        return poisson_blend(image, patch, mask, params["center"])
