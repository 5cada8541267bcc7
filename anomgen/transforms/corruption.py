"""Cheap local corruptions: noise, blur, a colour cast or scratches inside a random region.

These need no texture source and cost a few tensor ops, so they suit fast baselines and
mixing with heavier strategies. The region is a Perlin blob (DRAEM's shapes) or an
ellipse; the corrupted image is composited inside it only, so every pixel outside the
returned mask is bit-identical to the input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from anomgen.core import (
    AnomalyTransform,
    check_int_range,
    check_keys,
    check_range,
    random_int,
    random_uniform,
    register,
)
from anomgen.functional.corruptions import color_shift, gaussian_blur, gaussian_noise, scratch
from anomgen.transforms.perlin import PerlinMaskGenerator

__all__ = ["LocalCorruption"]

KINDS = ("noise", "blur", "color", "scratch")
MASK_SHAPES = ("perlin", "ellipse")
# The keys each region shape and corruption kind reads from its params (checked by replay).
_REGION_KEYS = {"perlin": ("cells", "angle", "noise_seed"), "ellipse": ("center", "axes", "angle")}
_CORRUPTION_KEYS = {
    "noise": ("sigma", "seed"),
    "blur": ("sigma",),
    "color": ("offsets",),
    "scratch": ("lines", "thickness", "intensity"),
}


def _positive_range(name: str, value: Sequence[float], high: float) -> tuple[float, float]:
    lo, hi = check_range(name, value, 0.0, high)
    if hi <= 0:
        raise ValueError(f"{name} must allow a positive value (max > 0), got {value!r}")
    return lo, hi


def _ellipse_mask(
    size: tuple[int, int],
    center: Sequence[float],
    axes: Sequence[float],
    angle: float,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(1,H,W) binary mask of an ellipse: ``center`` = (y, x), semi-``axes`` = (a_y, a_x) in
    pixels, turned by ``angle`` degrees; pixel ``i`` covers [i, i+1)."""
    height, width = size
    dy = torch.arange(height, dtype=torch.float64, device=device).view(-1, 1) + 0.5 - center[0]
    dx = torch.arange(width, dtype=torch.float64, device=device).view(1, -1) + 0.5 - center[1]
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    along_x, along_y = dx * cos - dy * sin, dx * sin + dy * cos
    inside = (along_y / axes[0]) ** 2 + (along_x / axes[1]) ** 2 <= 1.0
    return inside.float()[None]


@register
@dataclass
class LocalCorruption(AnomalyTransform):
    """Noise, blur, a colour cast or scratches, composited inside a random region.

    ``kind`` is one of ``"noise"``, ``"blur"``, ``"color"``, ``"scratch"``, or ``"any"``
    (one of the four drawn per sample with equal odds). The region is a Perlin blob
    (``mask_shape="perlin"``, DRAEM's shapes, tuned by ``perlin_scale_exponent`` and
    ``perlin_threshold``) or an ellipse whose semi-axes are ``ellipse_axes`` times the
    shorter image side (at least 1 px, so it always covers a pixel).

    Defaults, in [0, 1] intensity units unless noted:

    * ``noise_sigma`` (0.05, 0.2): std of additive Gaussian noise, visible on any texture;
    * ``blur_sigma`` (1.0, 4.0) px: Gaussian blur, erasing fine texture;
    * ``color_offset`` (0.1, 0.3): per-channel offset magnitude, sign drawn per channel;
    * ``scratch_count`` (1, 3) lines, ``scratch_thickness`` (1, 3) px: straight
      anti-aliased lines between two random pixels of the region, kept inside it (params
      hold each end as a fraction picking a region pixel in raster order); a scratch is
      dark or bright with even odds, pulling pixels to a grey level drawn from
      ``scratch_intensity`` (0.0, 0.2) or to 1 minus it.

    The mask is the region (for scratches: the region's pixels the lines touch).
    """

    kind: str = "any"
    mask_shape: str = "perlin"
    noise_sigma: tuple[float, float] = (0.05, 0.2)
    blur_sigma: tuple[float, float] = (1.0, 4.0)
    color_offset: tuple[float, float] = (0.1, 0.3)
    scratch_count: tuple[int, int] = (1, 3)
    scratch_thickness: tuple[int, int] = (1, 3)
    scratch_intensity: tuple[float, float] = (0.0, 0.2)
    ellipse_axes: tuple[float, float] = (0.05, 0.25)
    perlin_scale_exponent: tuple[int, int] = (0, 5)
    perlin_threshold: float = 0.5
    _masks: PerlinMaskGenerator = field(init=False, repr=False)
    param_keys = ("kind", "region", "corruption")

    def __post_init__(self) -> None:
        if self.kind not in (*KINDS, "any"):
            raise ValueError(f"kind must be one of {(*KINDS, 'any')}, got {self.kind!r}")
        if self.mask_shape not in MASK_SHAPES:
            raise ValueError(f"mask_shape must be one of {MASK_SHAPES}, got {self.mask_shape!r}")
        self.noise_sigma = _positive_range("noise_sigma", self.noise_sigma, 1.0)
        self.blur_sigma = _positive_range("blur_sigma", self.blur_sigma, 100.0)
        self.color_offset = _positive_range("color_offset", self.color_offset, 1.0)
        self.scratch_count = check_int_range("scratch_count", self.scratch_count, 1, 100)
        self.scratch_thickness = check_int_range("scratch_thickness", self.scratch_thickness, 1, 64)
        self.scratch_intensity = check_range("scratch_intensity", self.scratch_intensity, 0, 1)
        self.ellipse_axes = _positive_range("ellipse_axes", self.ellipse_axes, 1.0)
        try:
            self._masks = PerlinMaskGenerator(
                scale_exponent=self.perlin_scale_exponent, threshold=self.perlin_threshold
            )
        except ValueError as error:  # its messages start with the field's name: spell it ours
            raise ValueError(f"perlin_{error}") from None
        self.perlin_scale_exponent = self._masks.scale_exponent
        self.perlin_threshold = float(self._masks.threshold)

    def strategy(self, params: dict[str, Any]) -> str:
        return f"{self.name}:{params['kind']}"

    def check_params(self, params: Any) -> None:
        """Also the region's and the corruption's keys (an unknown shape or kind is apply's
        error)."""
        super().check_params(params)
        region, kind = params["region"], params["kind"]
        shape = check_keys("region", region, ("shape",))["shape"]
        if isinstance(shape, str) and shape in _REGION_KEYS:
            check_keys(f"{shape} region", region, _REGION_KEYS[shape])
        if isinstance(kind, str) and kind in _CORRUPTION_KEYS:
            check_keys(f"{kind} corruption", params["corruption"], _CORRUPTION_KEYS[kind])

    # ---------------------------------------------------------------------- sampling

    def sample_params(self, image: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        kind = self.kind if self.kind != "any" else KINDS[random_int(generator, 0, len(KINDS) - 1)]
        return {
            "kind": kind,
            "region": self._sample_region(image.shape[-2:], generator),
            "corruption": self._sample_corruption(kind, image.shape[0], generator),
        }

    def _sample_region(self, size: Sequence[int], generator: torch.Generator) -> dict[str, Any]:
        if self.mask_shape == "perlin":
            return {"shape": "perlin", **self._masks.sample_params(generator)}
        height, width = size
        side = min(height, width)
        return {
            "shape": "ellipse",
            "center": [random_uniform(generator, 0, height), random_uniform(generator, 0, width)],
            "axes": [max(1.0, side * random_uniform(generator, *self.ellipse_axes)) for _ in "yx"],
            "angle": random_uniform(generator, 0.0, 180.0),
        }

    def _sample_corruption(
        self, kind: str, channels: int, generator: torch.Generator
    ) -> dict[str, Any]:
        if kind == "noise":
            return {
                "sigma": random_uniform(generator, *self.noise_sigma),
                "seed": random_int(generator, 0, 2**31 - 1),
            }
        if kind == "blur":
            return {"sigma": random_uniform(generator, *self.blur_sigma)}
        if kind == "color":
            offsets = []
            for _ in range(channels):
                sign = 1.0 if random_int(generator, 0, 1) else -1.0
                offsets.append(sign * random_uniform(generator, *self.color_offset))
            return {"offsets": offsets}
        count = random_int(generator, *self.scratch_count)
        lines = [[random_uniform(generator, 0, 1) for _ in "ab"] for _ in range(count)]
        level = random_uniform(generator, *self.scratch_intensity)
        return {
            "lines": lines,
            "thickness": random_int(generator, *self.scratch_thickness),
            "intensity": level if random_int(generator, 0, 1) else 1.0 - level,
        }

    # ---------------------------------------------------------------------- applying

    def apply_batch(
        self, images: torch.Tensor, params: Sequence[dict[str, Any]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        regions = self._regions(images, params)
        outputs = [
            self._corrupt(image, region, p) for image, region, p in zip(images, regions, params)
        ]
        return torch.stack([o[0] for o in outputs]), torch.stack([o[1] for o in outputs])

    def _regions(self, images: torch.Tensor, params: Sequence[dict[str, Any]]) -> torch.Tensor:
        """(B,1,H,W) binary regions; all Perlin ones come from one batched noise call."""
        size, device = tuple(images.shape[-2:]), images.device
        regions = torch.zeros((len(params), 1, *size), device=device)
        perlin = [i for i, p in enumerate(params) if p["region"]["shape"] == "perlin"]
        if perlin:
            regions[perlin] = self._masks.masks(size, [params[i]["region"] for i in perlin], device)
        for i, p in enumerate(params):
            region = p["region"]
            if region["shape"] == "ellipse":
                regions[i] = _ellipse_mask(
                    size, region["center"], region["axes"], region["angle"], device
                )
            elif region["shape"] != "perlin":
                raise ValueError(f"unknown region shape {region['shape']!r}; use {MASK_SHAPES}")
        return regions

    def _corrupt(
        self, image: torch.Tensor, region: torch.Tensor, params: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        kind, corruption = params["kind"], params["corruption"]
        if kind == "noise":
            corrupted = gaussian_noise(image, corruption["sigma"], corruption["seed"])
        elif kind == "blur":
            corrupted = gaussian_blur(image, corruption["sigma"])
        elif kind == "color":
            corrupted = color_shift(image, corruption["offsets"])
        elif kind == "scratch":
            if not bool(region.any()):
                return image.clone(), region
            corrupted, lines = scratch(
                image,
                _lines_in_region(region, corruption["lines"]),
                corruption["thickness"],
                corruption["intensity"],
            )
            region = region * (lines > 0)
        else:
            raise ValueError(f"unknown corruption kind {kind!r}; use one of {KINDS}")
        return torch.where(region > 0, corrupted, image), region


def _lines_in_region(region: torch.Tensor, lines: Sequence[Sequence[float]]) -> list:
    """Pixel [x, y] polylines whose endpoints are region pixels picked by fraction.

    A fraction f in [0, 1) picks region pixel ``floor(f * n)`` of ``n`` in raster order, so
    both ends of every scratch lie inside the region, whatever its shape.
    """
    ys, xs = torch.nonzero(region[0] > 0, as_tuple=True)
    count = ys.numel()
    picks = [[min(count - 1, int(f * count)) for f in line] for line in lines]
    return [[[float(xs[i]), float(ys[i])] for i in ends] for ends in picks]
