"""Transforms take images that require grad: the same samples, and gradients through them.

Several photometric augmenters computed into out= buffers, which autograd refuses, so
DRAEM's texture paste and the edge band failed on their own image as the texture.
"""

from __future__ import annotations

import pytest
import torch

import anomgen as ag
from anomgen.core import registered_transforms
from anomgen.functional.photometric import PHOTOMETRIC_AUGMENTERS
from tests.conftest import random_image

HEIGHT, WIDTH = 32, 40
SEEDS = range(10)


def _pools() -> tuple[ag.TexturePool, ag.AnomalyPool]:
    textures = ag.TexturePool([random_image(3, 30, 30, 1), random_image(3, 50, 36, 2)])
    masks = [torch.zeros(1, HEIGHT, WIDTH), torch.zeros(1, HEIGHT, WIDTH)]
    masks[0][:, 8:18, 10:24] = 1
    masks[1][:, 4:12, 26:36] = 1
    anomalies = [random_image(3, HEIGHT, WIDTH, 3), random_image(3, HEIGHT, WIDTH, 4)]
    return textures, ag.AnomalyPool(anomalies, masks)


TEXTURES, ANOMALIES = _pools()
ALL_AUGMENTERS = tuple(PHOTOMETRIC_AUGMENTERS)
# Without textures, PerlinTexturePaste and EdgeBandPaste augment the (tracked) image itself.
TRANSFORMS = {
    "CutPaste": lambda: ag.CutPaste(),
    "CutPasteScar": lambda: ag.CutPasteScar(),
    "EdgeBandPaste": lambda: ag.EdgeBandPaste(n_augmenters=4, augmenters=ALL_AUGMENTERS),
    "EdgeBandPaste/textures": lambda: ag.EdgeBandPaste(textures=TEXTURES),
    "LocalCorruption": lambda: ag.LocalCorruption(),
    "Crack": lambda: ag.Crack(),
    "Normal": lambda: ag.Normal(),
    "PerlinTexturePaste": lambda: ag.PerlinTexturePaste(n_augmenters=5),
    "PerlinTexturePaste/textures": lambda: ag.PerlinTexturePaste(textures=TEXTURES),
    "PoissonPatch": lambda: ag.PoissonPatch(),
    "RealAnomalyImage": lambda: ag.RealAnomalyImage(ANOMALIES),
    "SeenAnomalyPaste": lambda: ag.SeenAnomalyPaste(ANOMALIES),
    "SeenAnomalyPaste/poisson": lambda: ag.SeenAnomalyPaste(ANOMALIES, blend="poisson"),
    "Compose": lambda: ag.Compose([ag.CutPaste(), ag.PerlinTexturePaste()]),
    "OneOf": lambda: ag.OneOf([ag.EdgeBandPaste(), ag.PerlinTexturePaste(), ag.LocalCorruption()]),
    "SomeOf": lambda: ag.SomeOf([ag.EdgeBandPaste(), ag.PerlinTexturePaste(), ag.CutPasteScar()]),
    "RandomApply": lambda: ag.RandomApply(ag.EdgeBandPaste(), p=0.8),
}


def test_every_registered_transform_is_covered():
    assert set(registered_transforms()) <= {name.split("/")[0] for name in TRANSFORMS}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_an_image_that_requires_grad_gives_the_same_samples_and_a_gradient(name, channels):
    transform = TRANSFORMS[name]()
    image = random_image(channels, HEIGHT, WIDTH, 5)
    image[:, :3, :3] = 0.0  # black pixels: gamma's log2 is -inf there
    image[:, 3:6, :3] = 0.5  # grey pixels: no hue
    calls = [(image, {"seed": seed}) for seed in SEEDS]
    calls.append((torch.stack([image, image.flip(-1)]), {"seeds": [11, 12]}))
    for plain, seeds in calls:
        expected = transform(plain, **seeds)
        tracked = plain.clone().requires_grad_()
        result = transform(tracked, **seeds)
        assert result.meta == expected.meta, seeds
        assert torch.equal(result.image.detach(), expected.image), seeds
        assert torch.equal(result.mask, expected.mask), seeds
        if name == "RealAnomalyImage":  # the anomalous image replaces the input
            assert not result.image.requires_grad
            continue
        result.image.sum().backward()
        assert tracked.grad.shape == plain.shape and torch.isfinite(tracked.grad).all(), seeds
