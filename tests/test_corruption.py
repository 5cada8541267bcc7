"""LocalCorruption: each corruption does what it says, inside its region only."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from anomgen.core import from_dict
from anomgen.functional.corruptions import gaussian_blur
from anomgen.transforms.corruption import KINDS, LocalCorruption
from anomgen.transforms.perlin import PerlinMaskGenerator
from tests.conftest import random_image

ELLIPSE = {"shape": "ellipse", "center": [32.0, 40.0], "axes": [12.0, 20.0], "angle": 30.0}


def region_of(transform: LocalCorruption, image: torch.Tensor, params: dict) -> torch.Tensor:
    """The (1,H,W) region of ``params``: a colour cast there marks every region pixel."""
    as_color = {**params, "kind": "color", "corruption": {"offsets": [0.2] * image.shape[0]}}
    return transform.replay(image, as_color).mask


def assert_contract(before: torch.Tensor, result) -> None:
    mask = result.mask[0]
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    changed = (result.image != before).any(dim=0)
    assert not changed[mask == 0].any(), "pixels outside the mask changed"
    if result.meta["anomalous"]:
        assert mask.sum() > 0 and changed[mask > 0].any()
    else:
        assert mask.sum() == 0


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(16, 300),
    width=st.integers(16, 300),
    channels=st.sampled_from([1, 3]),
    kind=st.sampled_from([*KINDS, "any"]),
    mask_shape=st.sampled_from(["perlin", "ellipse"]),
    seed=st.integers(0, 2**40),
)
def test_contract_on_random_sizes(height, width, channels, kind, mask_shape, seed):
    image = random_image(channels, height, width, seed % 1000)
    result = LocalCorruption(kind=kind, mask_shape=mask_shape)(image, seed=seed)
    assert result.image.shape == image.shape and result.mask.shape == (1, height, width)
    assert result.meta["anomalous"]
    assert_contract(image, result)
    drawn = result.meta["params"]["kind"]
    assert drawn in KINDS and (kind == "any" or drawn == kind)
    assert result.meta["strategy"] == f"LocalCorruption:{drawn}"
    json.dumps(result.meta)


def test_any_draws_every_kind():
    transform, image = LocalCorruption(), random_image(3, 32, 32)
    drawn = {transform(image, seed=s).meta["params"]["kind"] for s in range(40)}
    assert drawn == set(KINDS)


def test_noise_has_the_drawn_sigma_inside_the_region():
    image = torch.full((3, 64, 80), 0.5)
    params = {"kind": "noise", "region": ELLIPSE, "corruption": {"sigma": 0.1, "seed": 3}}
    result = LocalCorruption().replay(image, params)
    inside = result.mask[0] > 0
    assert abs(inside.sum().item() - math.pi * 12 * 20) < 0.05 * math.pi * 12 * 20
    residual = (result.image - image)[:, inside]
    assert abs(residual.std().item() - 0.1) < 0.01 and abs(residual.mean().item()) < 0.01


def test_blur_matches_the_functional_blur_inside_the_region():
    image = (torch.arange(64).view(1, 64, 1) + torch.arange(80).view(1, 1, 80)) % 2 * 0.6 + 0.2
    params = {"kind": "blur", "region": ELLIPSE, "corruption": {"sigma": 2.0}}
    result = LocalCorruption().replay(image, params)
    inside = result.mask[0] > 0
    assert torch.equal(result.image[:, inside], gaussian_blur(image, 2.0)[:, inside])
    assert result.image[:, inside].std() < 0.5 * image[:, inside].std()


def test_color_shift_adds_the_offsets_inside_the_region():
    image = random_image(3, 64, 80)
    params = {"kind": "color", "region": ELLIPSE, "corruption": {"offsets": [0.1, -0.15, 0.05]}}
    result = LocalCorruption().replay(image, params)
    inside = result.mask[0] > 0
    shift = (result.image - image)[:, inside].mean(dim=1)
    assert torch.allclose(shift, torch.tensor([0.1, -0.15, 0.05]), atol=1e-5)


@pytest.mark.parametrize("mask_shape", ["perlin", "ellipse"])
def test_scratches_stay_inside_the_region_and_pull_towards_their_level(mask_shape: str):
    transform, image = (
        LocalCorruption(kind="scratch", mask_shape=mask_shape),
        random_image(1, 96, 96),
    )
    for seed in range(8):
        result = transform(image, seed=seed)
        params = result.meta["params"]
        assert result.meta["anomalous"] and 1 <= len(params["corruption"]["lines"]) <= 3
        region = region_of(transform, image, params)
        assert (result.mask <= region).all() and result.mask.sum() < region.sum()
        inside = result.mask > 0
        level = params["corruption"]["intensity"]
        assert level <= 0.2 or level >= 0.8
        closer = (result.image[inside] - level).abs() <= (image[inside] - level).abs()
        assert closer.all()


def test_perlin_region_is_the_perlin_generators_mask():
    transform, image = LocalCorruption(kind="color"), random_image(3, 50, 70)
    result = transform(image, seed=5)
    region = result.meta["params"]["region"]
    assert region["shape"] == "perlin"
    expected = PerlinMaskGenerator().masks((50, 70), [region])[0]
    assert torch.equal(result.mask, expected)


@settings(max_examples=30, deadline=None)
@given(height=st.integers(16, 300), width=st.integers(16, 300), seed=st.integers(0, 2**40))
def test_ellipse_axes_scale_with_the_image(height: int, width: int, seed: int):
    transform = LocalCorruption(kind="color", mask_shape="ellipse")
    region = transform(random_image(1, height, width), seed=seed).meta["params"]["region"]
    side = min(height, width)
    for axis in region["axes"]:
        assert max(1.0, 0.05 * side) - 1e-9 <= axis <= max(1.0, 0.25 * side) + 1e-9
    assert 0 <= region["center"][0] <= height and 0 <= region["center"][1] <= width


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mask_shape", ["perlin", "ellipse"])
def test_tiny_images_work(kind: str, mask_shape: str):
    transform = LocalCorruption(kind=kind, mask_shape=mask_shape)
    for size in [(2, 2), (5, 3), (16, 16)]:
        image = random_image(3, *size, seed=1)
        for seed in range(3):
            result = transform(image, seed=seed)
            assert_contract(image, result)
            assert result.meta["anomalous"] or mask_shape == "perlin"


def test_seed_determinism_and_replay():
    transform, image = LocalCorruption(), random_image(3, 70, 90)
    for seed in range(8):
        first, second = transform(image, seed=seed), transform(image, seed=seed)
        assert torch.equal(first.image, second.image) and torch.equal(first.mask, second.mask)
        assert first.meta == second.meta
        replayed = transform.replay(image, first.meta["params"])
        assert torch.equal(replayed.image, first.image) and torch.equal(replayed.mask, first.mask)
    assert transform(image, seed=1).meta["params"] != transform(image, seed=2).meta["params"]


@pytest.mark.parametrize("mask_shape", ["perlin", "ellipse"])
def test_batch_with_seeds_equals_single_calls(mask_shape: str):
    transform = LocalCorruption(mask_shape=mask_shape)
    batch = torch.stack([random_image(3, 48, 64, seed=i) for i in range(6)])
    batch_seeds = [3, 99, 1234, 7, 8, 2**40]
    result = transform(batch, seeds=batch_seeds)
    assert len({m["params"]["kind"] for m in result.meta}) > 1
    for i, seed in enumerate(batch_seeds):
        single = transform(batch[i], seed=seed)
        assert torch.equal(result.image[i], single.image)
        assert torch.equal(result.mask[i], single.mask)
        assert result.meta[i] == single.meta


@pytest.mark.parametrize("shape", [(40, 52, 3), (40, 52)])
def test_numpy_and_pil_round_trips(shape: tuple[int, ...]):
    array = np.random.default_rng(0).integers(30, 220, shape, dtype=np.uint8)
    transform = LocalCorruption(kind="color", mask_shape="ellipse")
    for image in (array, Image.fromarray(array)):
        result = transform(image, seed=4)
        out = np.asarray(result.image)
        assert type(result.image) is type(image) and out.dtype == np.uint8 and out.shape == shape
        assert result.mask.dtype == np.float32 and result.mask.shape == shape[:2]
        outside = result.mask == 0
        assert np.array_equal(out[outside], array[outside])
        assert result.meta["anomalous"] and not np.array_equal(out[~outside], array[~outside])


@pytest.mark.parametrize(
    "transform",
    [
        LocalCorruption(),
        LocalCorruption(
            kind="scratch",
            mask_shape="ellipse",
            noise_sigma=(0.1, 0.1),
            blur_sigma=(0.5, 2.0),
            color_offset=(0.0, 0.5),
            scratch_count=(2, 6),
            scratch_thickness=(2, 5),
            scratch_intensity=(0.1, 0.3),
            ellipse_axes=(0.1, 0.4),
            perlin_scale_exponent=(2, 4),
            perlin_threshold=0.3,
        ),
    ],
)
def test_config_round_trip(transform: LocalCorruption):
    config = transform.to_dict()
    rebuilt = from_dict(config)
    assert rebuilt == transform and rebuilt.to_dict() == config
    image = random_image(3, 40, 48)
    assert torch.equal(rebuilt(image, seed=2).image, transform(image, seed=2).image)


@pytest.mark.parametrize(
    ("kwargs", "token"),
    [
        ({"kind": "fog"}, "kind.*fog"),
        ({"mask_shape": "square"}, "mask_shape.*square"),
        ({"noise_sigma": (0.0, 0.0)}, "noise_sigma"),
        ({"noise_sigma": (0.2, 0.1)}, "noise_sigma"),
        ({"blur_sigma": (-1.0, 2.0)}, "blur_sigma"),
        ({"color_offset": (0.1, 1.5)}, "color_offset.*1.5"),
        ({"scratch_count": (0, 2)}, "scratch_count"),
        ({"scratch_count": (1.5, 2)}, "scratch_count.*1.5"),
        ({"scratch_thickness": (1, 100)}, "scratch_thickness.*100"),
        ({"scratch_intensity": (-0.1, 0.2)}, "scratch_intensity"),
        ({"ellipse_axes": (0.0, 0.0)}, "ellipse_axes"),
        ({"perlin_threshold": 1.0}, "perlin_threshold.*1.0"),
        ({"perlin_threshold": "x"}, "^perlin_threshold must be a number, got 'x'$"),
        ({"perlin_scale_exponent": (0, 9)}, "perlin_scale_exponent"),
    ],
)
def test_bad_parameters_raise(kwargs: dict, token: str):
    with pytest.raises(ValueError, match=token):
        LocalCorruption(**kwargs)


@pytest.mark.parametrize(
    ("params", "token"),
    [
        ({"kind": "fog", "region": ELLIPSE, "corruption": {}}, "fog"),
        ({"kind": "blur", "region": {"shape": "star"}, "corruption": {"sigma": 1.0}}, "star"),
        ({"kind": "color", "region": ELLIPSE, "corruption": {"offsets": [0.1]}}, "offsets"),
        ({"kind": "blur", "region": ELLIPSE, "corruption": {}}, r"blur corruption .* \['sigma'\]"),
        ({"kind": "blur", "region": {"shape": "ellipse"}}, r"lack \['corruption'\]"),
        (
            {"kind": "blur", "region": {"shape": "ellipse"}, "corruption": {"sigma": 1.0}},
            r"ellipse region parameters lack \['center', 'axes', 'angle'\]",
        ),
    ],
)
def test_bad_replay_parameters_raise(params: dict, token: str):
    with pytest.raises(ValueError, match=token):
        LocalCorruption().replay(random_image(3, 20, 20), params)


@pytest.mark.parametrize("kind", KINDS)
def test_a_tensor_that_requires_grad_is_accepted_like_by_the_other_transforms(kind: str):
    """Noise summed into an out= buffer made autograd refuse the image; now every kind gives
    the plain tensor's result (blur within float error: OpenCV serves only the plain one)
    and gradients flow back to the input."""
    image = random_image(3, 40, 48, seed=5)
    transform = LocalCorruption(kind=kind, mask_shape="ellipse")
    tracked = image.clone().requires_grad_(True)
    result = transform(tracked, seed=7)
    expected = transform(image, seed=7)
    torch.testing.assert_close(result.image.detach(), expected.image, rtol=0, atol=1e-6)
    assert torch.equal(result.mask, expected.mask)
    result.image.sum().backward()
    assert tracked.grad is not None and tracked.grad.shape == image.shape
