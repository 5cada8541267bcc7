"""Crack and its functional core: long thin dark lines about one direction."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from anomgen import Crack, from_dict
from anomgen.functional.crack import crack, crack_path
from tests.conftest import random_image


def test_crack_path_takes_equal_steps_along_its_headings():
    path = np.array(crack_path((10.0, 20.0), 30.0, [0.0, 90.0, 180.0]))
    assert np.allclose(path, [[10, 20], [20, 20], [20, 30], [10, 30]])
    diagonal = np.array(crack_path((0.0, 0.0), 8.0, [45.0] * 4))
    assert np.allclose(np.linalg.norm(np.diff(diagonal, axis=0), axis=1), 2.0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (((1.0,), 5.0, [0.0]), "start"),
        (((0.0, math.nan), 5.0, [0.0]), "start"),
        (((0.0, 0.0), -1.0, [0.0]), "length"),
        (((0.0, 0.0), 5.0, []), "headings"),
        (((0.0, 0.0), 5.0, [math.inf]), "headings"),
    ],
)
def test_crack_path_rejects_bad_geometry(args, message):
    with pytest.raises(ValueError, match=message):
        crack_path(*args)


def test_crack_darkens_by_depth_under_the_line_and_nowhere_else():
    image = torch.full((3, 20, 30), 0.8)
    out, mask = crack(image, [[[2.0, 10.0], [27.0, 10.0]]], thickness=2, depth=0.5)
    assert mask.shape == (1, 20, 30) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert torch.allclose(out[:, 9:12, 5:25], torch.tensor(0.4))  # full coverage on the line
    assert (out[:, [8, 12], 5:25] > 0.4).all() and (out[:, [8, 12], 5:25] < 0.8).all()  # AA
    outside = (mask == 0).expand_as(image)
    assert torch.equal(out[outside], image[outside])
    assert (out <= image).all()


def test_crack_keeps_the_texture_visible():
    """Multiplicative darkening: a brighter pixel stays brighter under the crack."""
    image = torch.tensor([[0.2, 0.6, 1.0]]).view(1, 1, 3).expand(1, 7, 3).clone()
    out, _ = crack(image, [[[-2.0, 3.0], [5.0, 3.0]]], thickness=3, depth=0.4)
    assert torch.allclose(out[0, 3], image[0, 3] * 0.6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"depth": 1.5}, "depth"), ({"thickness": 0}, "thickness"), ({"lines": []}, "lines")],
)
def test_crack_rejects_bad_values(kwargs, message):
    values = {"lines": [[[0.0, 0.0], [5.0, 5.0]]], "thickness": 1, "depth": 0.3, **kwargs}
    with pytest.raises(ValueError, match=message):
        crack(torch.rand(1, 8, 8), **values)


def test_the_transform_draws_a_long_crack_in_its_direction():
    image = torch.full((1, 128, 128), 0.7)
    transform = Crack(
        length=(0.5, 0.5), angle=(90.0, 90.0), wander=0.0, branches=(0, 0), thickness=(1, 1)
    )
    result = transform(image, seed=3)
    ys, xs = torch.nonzero(result.mask[0] > 0, as_tuple=True)
    assert result.meta["anomalous"] and result.meta["strategy"] == "Crack"
    assert xs.max() - xs.min() <= 2  # vertical: the line and its anti-aliased fringe
    # Half the diagonal (90.5 px), less what falls off the image from a random centre.
    assert ys.max() - ys.min() >= 40
    outside = result.mask == 0
    assert torch.equal(result.image[outside], image[outside])
    inside = result.mask > 0
    assert (result.image[inside] < image[inside]).all()


def test_branches_leave_the_main_crack():
    transform = Crack(branches=(2, 2))
    params = transform(random_image(1, 64, 64), seed=0).meta["params"]
    main, *branches = params["lines"]
    assert len(branches) == 2
    assert all(branch[0] in main[1:] for branch in branches)


def test_seeded_replayable_and_serialisable():
    transform, image = Crack(angle=(60.0, 120.0)), random_image(3, 48, 64, seed=1)
    first, second = transform(image, seed=7), transform(image, seed=7)
    assert torch.equal(first.image, second.image) and torch.equal(first.mask, second.mask)
    assert not torch.equal(transform(image, seed=8).mask, first.mask)
    params = json.loads(json.dumps(first.meta["params"]))
    assert torch.equal(transform.replay(image, params).image, first.image)
    rebuilt = from_dict(json.loads(json.dumps(transform.to_dict())))
    assert isinstance(rebuilt, Crack) and rebuilt.angle == (60.0, 120.0)
    assert torch.equal(rebuilt(image, seed=7).image, first.image)


def test_numpy_images_come_back_as_uint8_with_a_matching_mask():
    array = (np.random.default_rng(0).random((40, 50, 3)) * 200 + 40).astype(np.uint8)
    result = Crack()(array, seed=2)
    assert result.image.dtype == np.uint8 and result.mask.shape == (40, 50)
    outside = result.mask == 0
    assert np.array_equal(result.image[outside], array[outside])
    assert result.meta["anomalous"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"length": (0.0, 0.0)}, "length"),
        ({"length": (0.5, 0.1)}, "length"),
        ({"angle": (0.0, 400.0)}, "angle"),
        ({"wander": -1.0}, "wander"),
        ({"steps": 0}, "steps"),
        ({"branches": (0, 1.5)}, "branches"),
        ({"branch_angle": (10.0, 200.0)}, "branch_angle"),
        ({"thickness": (0, 2)}, "thickness"),
        ({"depth": (0.0, 0.0)}, "depth"),
        ({"depth": (0.2, 1.2)}, "depth"),
    ],
)
def test_bad_settings_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Crack(**kwargs)


@pytest.mark.parametrize(
    ("edit", "message"),
    [({"lines": [[[0, 0]]]}, "polyline 0"), ({"depth": 2}, "depth"), ({"thickness": 0}, "thick")],
)
def test_replay_rejects_bad_params(edit, message):
    transform, image = Crack(), random_image(1, 24, 24)
    params = {**transform(image, seed=0).meta["params"], **edit}
    with pytest.raises(ValueError, match=message):
        transform.replay(image, params)
