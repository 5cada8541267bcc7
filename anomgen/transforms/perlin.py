"""Perlin-noise masks and DRAEM-style texture pasting (Zavrtanik et al., ICCV 2021)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from anomgen.core import (
    AnomalyTransform,
    check_int,
    check_int_range,
    check_range,
    check_seeds,
    check_size,
    finite_number,
    make_generator,
    random_int,
    random_uniform,
    register,
)
from anomgen.functional.perlin import perlin_noise
from anomgen.functional.photometric import apply_augmenters, sample_augmenters
from anomgen.io import TexturePool, check_texture, texture_pool

__all__ = ["PerlinMaskGenerator", "PerlinTexturePaste"]


@dataclass
class PerlinMaskGenerator:
    """Binary masks from thresholded, rotated Perlin noise (DRAEM's anomaly shapes).

    Lattice cells per axis are ``2**e`` with ``e`` drawn per axis from ``scale_exponent``
    (DRAEM: 0..5), the field is rotated by an angle from ``rotation`` (DRAEM: +-90 degrees)
    and pixels above ``threshold`` (DRAEM: 0.5) form the mask. Usable on its own::

        masks = PerlinMaskGenerator()((256, 256), seeds=range(16))  # (16, 1, 256, 256)
    """

    scale_exponent: tuple[int, int] = (0, 5)
    rotation: tuple[float, float] = (-90.0, 90.0)
    threshold: float = 0.5

    def __post_init__(self) -> None:
        self.scale_exponent = check_int_range("scale_exponent", self.scale_exponent, 0, 8)
        self.rotation = check_range("rotation", self.rotation, -360, 360)
        # Messages start with the field's name: LocalCorruption prefixes them with "perlin_".
        self.threshold = finite_number("threshold", self.threshold)
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold!r}")

    def sample_params(self, generator: torch.Generator) -> dict[str, Any]:
        low, high = self.scale_exponent
        return {
            "cells": [2 ** random_int(generator, low, high), 2 ** random_int(generator, low, high)],
            "angle": random_uniform(generator, *self.rotation),
            "noise_seed": random_int(generator, 0, 2**31 - 1),
        }

    def masks(
        self,
        size: tuple[int, int],
        params: Sequence[dict[str, Any]],
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """(B,1,H,W) binary float masks for sampled ``params``, all computed at once."""
        noise = perlin_noise(
            size,
            [tuple(p["cells"]) for p in params],
            [p["angle"] for p in params],
            [p["noise_seed"] for p in params],
            device,
        )
        return (noise > self.threshold).float()[:, None]

    def __call__(
        self, size: tuple[int, int], seeds: Sequence[int], device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """Masks for ``size`` = (H, W), one per seed (a non-empty sequence of ints >= 0)."""
        size = check_size("size", size)
        generators = [make_generator(s) for s in check_seeds(seeds)]
        return self.masks(size, [self.sample_params(g) for g in generators], device)


@register
@dataclass
class PerlinTexturePaste(AnomalyTransform):
    """DRAEM's simulated anomaly: a Perlin-noise region filled with an augmented texture.

    The texture comes from ``textures`` (a folder such as DTD, or a ``TexturePool``) or,
    with ``textures=None``, from the image itself. It is resized to the image, altered by
    ``n_augmenters`` of DRAEM's 10 photometric augmenters, and blended inside the mask as
    ``image * beta + texture * (1 - beta)`` with ``beta ~ U(opacity)`` (DRAEM: U(0, 0.8)).
    Pixels outside the mask are untouched.
    """

    textures: str | Path | TexturePool | None = None
    scale_exponent: tuple[int, int] = (0, 5)
    rotation: tuple[float, float] = (-90.0, 90.0)
    threshold: float = 0.5
    opacity: tuple[float, float] = (0.0, 0.8)
    n_augmenters: int = 3
    _masks: PerlinMaskGenerator = field(init=False, repr=False)
    _pool: TexturePool | None = field(init=False, repr=False)
    param_keys = ("cells", "angle", "noise_seed", "texture", "augmenters", "beta")

    def __post_init__(self) -> None:
        self._masks = PerlinMaskGenerator(self.scale_exponent, self.rotation, self.threshold)
        self.scale_exponent = self._masks.scale_exponent
        self.rotation, self.threshold = self._masks.rotation, self._masks.threshold
        self.opacity = check_range("opacity", self.opacity, 0.0, 1.0)
        if self.opacity[1] >= 1.0:
            raise ValueError(f"opacity must stay below 1 (1 keeps the image), got {self.opacity!r}")
        self.n_augmenters = check_int("n_augmenters", self.n_augmenters, 0, 10)
        self._pool = texture_pool(self.textures, "textures")
        if isinstance(self.textures, Path):
            self.textures = str(self.textures)

    def sample_params(self, image: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        params = self._masks.sample_params(generator)
        params["texture"] = (
            -1 if self._pool is None else random_int(generator, 0, len(self._pool) - 1)
        )
        params["augmenters"] = sample_augmenters(generator, image.shape[0], k=self.n_augmenters)
        params["beta"] = random_uniform(generator, *self.opacity)
        return params

    def check_params(self, params: Any) -> None:
        super().check_params(params)
        finite_number("beta", params["beta"], 0.0, 1.0)

    def apply_batch(
        self, images: torch.Tensor, params: Sequence[dict[str, Any]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        size, channels, device = images.shape[-2:], images.shape[1], images.device
        masks = self._masks.masks(tuple(size), params, device)
        textures = [
            apply_augmenters(self._texture(image, p["texture"], size, channels), p["augmenters"])
            for image, p in zip(images, params)
        ]
        textures = textures[0][None] if len(textures) == 1 else torch.stack(textures)
        opacity = torch.tensor([1 - p["beta"] for p in params], device=device).view(-1, 1, 1, 1)
        # image * beta + texture * (1 - beta) inside the mask, the image itself outside.
        return torch.lerp(images, textures, masks * opacity), masks

    def _texture(self, image: torch.Tensor, index: int, size, channels: int) -> torch.Tensor:
        if check_texture(index, self._pool) < 0:
            return image
        return self._pool.get(index, tuple(size), channels, image.device)
