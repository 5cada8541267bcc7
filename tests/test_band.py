"""EdgeBandPaste and its band masks: region-level defects along one image edge."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from anomgen import EdgeBandPaste, TexturePool, from_dict
from anomgen.functional.band import edge_band_mask
from tests.conftest import random_image


def test_a_straight_band_covers_exactly_its_depth_from_each_side():
    top = edge_band_mask((40, 60), "top", depth=0.25)
    assert top.shape == (1, 40, 60)
    assert torch.equal(top[0, :10], torch.ones(10, 60)) and top[0, 10:].sum() == 0
    assert torch.equal(edge_band_mask((40, 60), "bottom", 0.25), top.flip(1))
    left = edge_band_mask((40, 60), "left", depth=0.5)
    assert torch.equal(left[0, :, :30], torch.ones(40, 30)) and left[0, :, 30:].sum() == 0
    assert torch.equal(edge_band_mask((40, 60), "right", 0.5), left.flip(2))


def test_span_tilt_and_waviness_shape_the_boundary():
    band = edge_band_mask((50, 100), "top", depth=0.4, span=(0.25, 0.75))[0]
    columns = band.sum(0)
    assert columns[:25].sum() == 0 and columns[75:].sum() == 0
    assert torch.all(columns[25:75] == 20)
    tilted = edge_band_mask((50, 100), "top", depth=0.4, tilt=0.4)[0].sum(0)
    assert tilted[0] < 20 < tilted[-1]  # deeper towards the right end
    wavy = edge_band_mask((50, 100), "top", depth=0.4, waviness=0.1, noise_seed=3)[0].sum(0)
    assert wavy.min() < wavy.max() and (wavy - 20).abs().max() <= 5
    again = edge_band_mask((50, 100), "top", depth=0.4, waviness=0.1, noise_seed=3)
    other = edge_band_mask((50, 100), "top", depth=0.4, waviness=0.1, noise_seed=4)
    assert torch.equal(again[0].sum(0), wavy) and not torch.equal(other[0].sum(0), wavy)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"size": (1, 8)}, "size"),
        ({"side": "middle"}, "side"),
        ({"depth": 0.0}, "depth"),
        ({"span": (0.5, 0.5)}, "span"),
        ({"waviness": -0.1}, "waviness"),
        ({"wave_cells": 0}, "wave_cells"),
    ],
)
def test_band_mask_rejects_bad_parameters(kwargs, message):
    arguments = {"size": (16, 16), "side": "top", "depth": 0.3, **kwargs}
    with pytest.raises(ValueError, match=message):
        edge_band_mask(**arguments)


@pytest.mark.parametrize("side", ["top", "bottom", "left", "right"])
def test_the_band_touches_its_side_and_changes_only_inside(side):
    image = random_image(3, 48, 64, seed=1)
    result = EdgeBandPaste(sides=(side,), opacity=(0.0, 0.2))(image, seed=5)
    mask = result.mask[0]
    assert result.meta["anomalous"] and result.meta["params"]["side"] == side
    edge = {"top": mask[0], "bottom": mask[-1], "left": mask[:, 0], "right": mask[:, -1]}
    assert edge[side].sum() > 0
    far = {"top": mask[-1], "bottom": mask[0], "left": mask[:, -1], "right": mask[:, 0]}
    assert far[side].sum() == 0  # depth at most 0.6 plus tilt and waves never reaches across
    outside = (result.mask == 0).expand_as(image)
    assert torch.equal(result.image[outside], image[outside])
    inside = (result.mask > 0).expand_as(image)
    assert (result.image[inside] - image[inside]).abs().mean() > 0.01
    json.dumps(result.meta)


def test_seeded_replayable_and_serialisable():
    transform = EdgeBandPaste()
    image = random_image(1, 64, 64, seed=2)
    first, second = transform(image, seed=11), transform(image, seed=11)
    assert torch.equal(first.image, second.image) and torch.equal(first.mask, second.mask)
    assert not torch.equal(transform(image, seed=12).mask, first.mask)
    replayed = transform.replay(image, first.meta["params"])
    assert torch.equal(replayed.image, first.image)
    rebuilt = from_dict(json.loads(json.dumps(transform.to_dict())))
    assert isinstance(rebuilt, EdgeBandPaste) and rebuilt.sides == transform.sides
    assert torch.equal(rebuilt(image, seed=11).image, first.image)


def test_textures_fill_the_band_when_given():
    flat = TexturePool([torch.full((3, 32, 32), 0.5)])
    transform = EdgeBandPaste(textures=flat, opacity=(0.0, 0.0), n_augmenters=0)
    image = torch.zeros(3, 32, 32)
    result = transform(image, seed=0)
    inside = (result.mask > 0).expand_as(image)
    assert torch.allclose(result.image[inside], torch.tensor(0.5), atol=1 / 255)  # stored as uint8


def test_without_textures_the_band_shows_the_mirrored_image():
    ramp = torch.linspace(0, 1, 40).view(1, 1, 40).expand(1, 30, 40).clone()
    transform = EdgeBandPaste(sides=("top",), opacity=(0.0, 0.0), n_augmenters=0)
    result = transform(ramp, seed=0)
    inside = result.mask > 0
    assert torch.allclose(result.image[inside], ramp.flip(-1)[inside])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sides": ()}, "sides"),
        ({"sides": "top"}, "sides"),
        ({"sides": ("top", "top")}, "sides"),
        ({"sides": ("up",)}, "sides"),
        ({"depth": (0.5, 0.2)}, "depth"),
        ({"span": (0.0, 1.0)}, "span"),
        ({"opacity": (0.0, 1.0)}, "opacity"),
        ({"augmenters": ("blur",)}, "augmenters"),
        # Every call would fail on the repeat, so the constructor refuses it.
        ({"augmenters": ("gamma", "gamma")}, "augmenters must be distinct"),
        ({"augmenters": 3}, "augmenters must be a list"),
        ({"sides": 3}, "sides must be a list"),
        ({"n_augmenters": 5}, "n_augmenters"),
        ({"textures": "/no/such/folder"}, "no/such"),
        ({"textures": 3}, "textures must be a folder"),
    ],
)
def test_bad_settings_are_rejected(kwargs, message):
    with pytest.raises((ValueError, FileNotFoundError, NotADirectoryError), match=message):
        EdgeBandPaste(**kwargs)


def test_numpy_settings_become_plain_values():
    """numpy integers count as ints (as everywhere in anomgen) and to_dict stays YAML-able."""
    band = EdgeBandPaste(sides=np.array(["top", "left"]), n_augmenters=np.int64(1))
    assert band.n_augmenters == 1 and type(band.n_augmenters) is int
    assert yaml.safe_load(yaml.safe_dump(band.to_dict()))["sides"] == ["top", "left"]


@pytest.mark.parametrize(
    ("edit", "token"),
    [({"texture": 0}, r"texture must be an integer in \[-1, -1\], got 0"), ({"beta": 5}, "beta")],
)
def test_replay_rejects_a_texture_it_lacks_and_a_beta_outside_0_1(edit, token):
    band, image = EdgeBandPaste(), random_image(3, 24, 24)
    params = {**band(image, seed=0).meta["params"], **edit}
    with pytest.raises(ValueError, match=token):
        band.replay(image, params)


def test_a_nan_tilt_is_refused_not_an_empty_band():
    with pytest.raises(ValueError, match="tilt must be a finite number, got nan"):
        edge_band_mask((16, 16), "top", 0.3, tilt=float("nan"))
