"""EdgeBandPaste: a band from one image edge whose content is replaced."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from anomgen.core import (
    AnomalyTransform,
    check_int,
    check_names,
    check_range,
    finite_number,
    random_int,
    random_uniform,
    register,
)
from anomgen.functional.band import EDGE_SIDES, edge_band_mask
from anomgen.functional.photometric import (
    PHOTOMETRIC_AUGMENTERS,
    apply_augmenters,
    sample_augmenters,
)
from anomgen.io import TexturePool, check_texture, texture_pool

__all__ = ["EdgeBandPaste"]

# Mild changes that keep the material recognisable, as in a ground or polished strip.
_DEFAULT_AUGMENTERS = ("gamma", "brightness", "sharpness", "autocontrast")


@register
@dataclass
class EdgeBandPaste(AnomalyTransform):
    """A band reaching in from an image edge, filled with a different texture.

    Models region-level defects that every small patch hides: a strip along one side of
    the part with another surface texture. The band starts at a side from ``sides``,
    reaches ``depth`` of the image across it (tilted by up to ``tilt``, its boundary
    wandering by up to ``waviness``) and covers ``span`` of the edge's length. Its content
    is ``textures`` (a folder or ``TexturePool``) or, with ``textures=None``, the image
    itself mirrored along the edge, so the band shows the texture of another part of the
    same surface. ``n_augmenters`` of ``augmenters`` alter it, and it is blended as
    ``image * beta + fill * (1 - beta)`` with ``beta ~ U(opacity)``.
    """

    textures: str | Path | TexturePool | None = None
    sides: tuple[str, ...] = EDGE_SIDES
    depth: tuple[float, float] = (0.15, 0.6)
    tilt: tuple[float, float] = (-0.2, 0.2)
    span: tuple[float, float] = (0.5, 1.0)
    waviness: tuple[float, float] = (0.0, 0.05)
    opacity: tuple[float, float] = (0.0, 0.5)
    n_augmenters: int = 2
    augmenters: tuple[str, ...] = _DEFAULT_AUGMENTERS
    _pool: TexturePool | None = field(init=False, repr=False)
    param_keys = (
        "side",
        "depth",
        "tilt",
        "span",
        "waviness",
        "wave_cells",
        "noise_seed",
        "texture",
        "augmenters",
        "beta",
    )

    def __post_init__(self) -> None:
        self.sides = check_names("sides", self.sides, EDGE_SIDES)
        if not self.sides:
            raise ValueError("sides must name at least one side")
        self.depth = check_range("depth", self.depth, 0.01, 1.0)
        self.tilt = check_range("tilt", self.tilt, -1.0, 1.0)
        self.span = check_range("span", self.span, 0.01, 1.0)
        self.waviness = check_range("waviness", self.waviness, 0.0, 0.5)
        self.opacity = check_range("opacity", self.opacity, 0.0, 1.0)
        if self.opacity[1] >= 1.0:
            raise ValueError(f"opacity must stay below 1 (1 keeps the image), got {self.opacity!r}")
        self.augmenters = check_names("augmenters", self.augmenters, tuple(PHOTOMETRIC_AUGMENTERS))
        self.n_augmenters = check_int("n_augmenters", self.n_augmenters, 0, len(self.augmenters))
        self._pool = texture_pool(self.textures, "textures")
        if isinstance(self.textures, Path):
            self.textures = str(self.textures)

    def sample_params(self, image: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        length = random_uniform(generator, *self.span)
        start = random_uniform(generator, 0.0, 1.0 - length)
        return {
            "side": self.sides[random_int(generator, 0, len(self.sides) - 1)],
            "depth": random_uniform(generator, *self.depth),
            "tilt": random_uniform(generator, *self.tilt),
            "span": [start, start + length],
            "waviness": random_uniform(generator, *self.waviness),
            "wave_cells": random_int(generator, 2, 8),
            "noise_seed": random_int(generator, 0, 2**31 - 1),
            "texture": -1 if self._pool is None else random_int(generator, 0, len(self._pool) - 1),
            "augmenters": sample_augmenters(
                generator, image.shape[0], k=self.n_augmenters, names=self.augmenters
            ),
            "beta": random_uniform(generator, *self.opacity),
        }

    def check_params(self, params: Any) -> None:
        super().check_params(params)
        finite_number("beta", params["beta"], 0.0, 1.0)

    def apply(
        self, image: torch.Tensor, params: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        size = tuple(image.shape[-2:])
        mask = edge_band_mask(
            size,
            params["side"],
            params["depth"],
            params["tilt"],
            tuple(params["span"]),
            params["waviness"],
            params["wave_cells"],
            params["noise_seed"],
        ).to(image.device)
        fill = apply_augmenters(self._fill(image, params), params["augmenters"])
        return torch.lerp(image, fill, mask * (1 - params["beta"])), mask

    def _fill(self, image: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        if check_texture(params["texture"], self._pool) < 0:
            # Mirrored along the edge: the band shows another part of the same surface.
            return image.flip(-1 if params["side"] in ("top", "bottom") else -2)
        return self._pool.get(params["texture"], image.shape[-2:], image.shape[0], image.device)
