"""CutPaste / CutPaste-Scar: functional geometry and the sample-contract invariants."""

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
from anomgen.functional.cutpaste import color_jitter, cut_paste, cut_paste_scar
from anomgen.transforms.cutpaste import CutPaste, CutPasteScar
from tests.conftest import random_image

TRANSFORMS = [CutPaste, CutPasteScar]
sizes = st.integers(16, 300)
seeds = st.integers(0, 2**40)


def assert_contract(before: torch.Tensor, result) -> None:
    """Mask binary; anomalous -> non-empty and changed inside; outside bit-identical."""
    mask = result.mask[0]
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    changed = (result.image != before).any(dim=0)
    assert not changed[mask == 0].any(), "pixels outside the mask changed"
    if result.meta["anomalous"]:
        assert mask.sum() > 0
        assert changed[mask > 0].all(), "mask covers pixels that did not change"


# ----------------------------------------------------------------------------- functional


def test_cut_paste_without_jitter_copies_the_patch():
    image = random_image(3, 20, 30)
    out, mask = cut_paste(image, (2, 3, 5, 7), (10, 20, 5, 7))
    assert torch.equal(out[:, 10:15, 20:27], image[:, 2:7, 3:10])
    assert mask[0, 10:15, 20:27].all() and mask.sum() == 35
    out[:, 10:15, 20:27] = image[:, 10:15, 20:27]
    assert torch.equal(out, image)


def test_cut_paste_mask_skips_pixels_that_kept_their_value():
    image = torch.zeros(1, 10, 10)
    image[0, 0, 0] = 1.0
    _, mask = cut_paste(image, (0, 0, 2, 2), (5, 5, 2, 2))
    assert mask.sum() == 1 and mask[0, 5, 5] == 1


def test_scar_at_zero_degrees_is_an_axis_aligned_copy():
    image = random_image(3, 40, 40)
    out, mask = cut_paste_scar(image, (0, 0, 12, 4), (20.0, 20.0), 0.0)
    assert torch.equal(out[:, 14:26, 18:22], image[:, 0:12, 0:4])
    assert mask.sum() == 48 and mask[0, 14:26, 18:22].all()


@pytest.mark.parametrize("angle", [-45.0, -17.0, 30.0, 45.0, 90.0])
def test_scar_footprint_has_the_strip_area_and_contents(angle: float):
    image = torch.zeros(1, 80, 80)
    image[0, :25, :8] = 1.0  # the strip; the rest of the image stays 0
    out, mask = cut_paste_scar(image, (0, 0, 25, 8), (50.3, 45.7), angle)
    assert abs(mask.sum().item() - 25 * 8) <= 25 + 8  # pixel-grid rounding along the border
    assert torch.equal(out[0, 40:, :] > 0, mask[0, 40:, :] > 0)  # footprint = pasted ones


def test_scar_footprint_is_clipped_at_the_image_border():
    image = random_image(1, 20, 20)
    out, mask = cut_paste_scar(image, (0, 0, 10, 3), (0.0, 0.0), 20.0)
    assert 0 < mask.sum() < 30 and out.shape == image.shape


def test_color_jitter_identity_and_extremes():
    image = random_image(3, 8, 9)
    assert torch.equal(color_jitter(image), image)
    assert torch.equal(color_jitter(image, brightness=0.0), torch.zeros_like(image))
    flat = color_jitter(image, contrast=0.0)
    assert torch.allclose(flat, flat[:, :1, :1].expand_as(flat))
    grey = color_jitter(image, saturation=0.0)
    assert torch.allclose(grey[0], grey[1]) and torch.allclose(grey[1], grey[2])
    half_turn = color_jitter(color_jitter(image, hue=0.5), hue=-0.5)
    assert torch.allclose(half_turn, image, atol=1e-4)
    assert not torch.allclose(color_jitter(image, hue=0.25), image, atol=1e-2)


def test_color_jitter_order_matters():
    image = random_image(3, 8, 9)
    a = color_jitter(image, brightness=1.8, contrast=0.3, order=(0, 1, 2, 3))
    b = color_jitter(image, brightness=1.8, contrast=0.3, order=(1, 0, 2, 3))
    assert not torch.allclose(a, b)


def test_saturation_and_hue_leave_grayscale_alone():
    image = random_image(1, 8, 9)
    assert torch.equal(color_jitter(image, saturation=0.0, hue=0.3), image)


@pytest.mark.parametrize(
    ("call", "token"),
    [
        (lambda im: cut_paste(im, (0, 0, 5, 5), (8, 8, 5, 5)), "box_dst"),
        (lambda im: cut_paste(im, (-1, 0, 2, 2), (0, 0, 2, 2)), "box_src"),
        (lambda im: cut_paste(im, (0, 0, 2, 2), (3, 3, 2, 3)), "size"),
        (lambda im: cut_paste(im, (0, 0, 0, 2), (0, 0, 0, 2)), "box_src"),
        (lambda im: cut_paste(im[0], (0, 0, 2, 2), (0, 0, 2, 2)), "(C,H,W)"),
        (lambda im: cut_paste_scar(im, (0, 0, 11, 2), (5, 5), 0.0), "box_src"),
        (lambda im: cut_paste_scar(im, (0, 0, 3, 2), (5, math.nan), 0.0), "finite"),
        (lambda im: color_jitter(im, order=(0, 0, 1, 2)), "order"),
        (lambda im: color_jitter(im, hue=0.7), "0.7"),
        (lambda im: color_jitter(im, contrast=-1.0), "contrast=-1.0"),
    ],
)
def test_functional_rejects_bad_geometry(call, token: str):
    with pytest.raises(ValueError, match=token.replace("(", r"\(").replace(")", r"\)")):
        call(random_image(3, 10, 10))


# ----------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("cls", TRANSFORMS)
@settings(max_examples=25, deadline=None)
@given(height=sizes, width=sizes, channels=st.sampled_from([1, 3]), seed=seeds)
def test_contract_on_random_sizes(cls, height: int, width: int, channels: int, seed: int):
    image = random_image(channels, height, width, seed % 1000)
    result = cls()(image, seed=seed)
    assert result.image.shape == image.shape and result.mask.shape == (1, height, width)
    assert result.meta["anomalous"]  # random textures always change under a paste
    assert_contract(image, result)
    json.dumps(result.meta)  # parameters are plain values


@settings(max_examples=40, deadline=None)
@given(height=sizes, width=sizes, seed=seeds)
def test_cutpaste_box_follows_area_and_aspect_ranges(height: int, width: int, seed: int):
    transform = CutPaste()
    image = random_image(3, height, width)
    result = transform(image, seed=seed)
    params = result.meta["params"]
    area, aspect = params["area_ratio"], params["aspect_ratio"]
    assert 0.02 <= area <= 0.15 and 0.3 <= aspect <= 3.3
    top, left, box_h, box_w = params["box_dst"]
    assert params["box_src"][2:] == [box_h, box_w]
    pixels = area * height * width
    assert abs(box_h - math.sqrt(pixels / aspect)) <= 0.5
    assert abs(box_w - math.sqrt(pixels * aspect)) <= 0.5
    assert top + box_h <= height and left + box_w <= width
    outside_box = torch.ones(height, width, dtype=torch.bool)
    outside_box[top : top + box_h, left : left + box_w] = False
    assert not result.mask[0][outside_box].any()


def test_cutpaste_narrows_aspect_on_elongated_images():
    transform = CutPaste(area_ratio=(0.1, 0.15))
    for seed in range(30):
        params = transform(random_image(1, 16, 300), seed=seed).meta["params"]
        assert params["box_dst"][2] <= 16 and 0.3 <= params["aspect_ratio"] <= 3.3


@settings(max_examples=40, deadline=None)
@given(height=sizes, width=sizes, seed=seeds)
def test_scar_size_scales_with_the_image(height: int, width: int, seed: int):
    params = CutPasteScar()(random_image(3, height, width), seed=seed).meta["params"]
    _, _, length, strip_w = params["box_src"]
    scale = min(height, width) / 256
    assert max(1, math.floor(2 * scale)) <= strip_w <= max(1, math.ceil(16 * scale))
    assert max(1, math.floor(10 * scale)) <= length <= max(1, math.ceil(25 * scale))
    assert -45 <= params["angle"] <= 45


def test_scar_is_larger_on_larger_images():
    transform = CutPasteScar()

    def lengths(size: int) -> list[int]:
        image = random_image(1, size, size)
        return [transform(image, seed=s).meta["params"]["box_src"][2] for s in range(40)]

    small, large = lengths(64), lengths(512)
    assert max(small) <= 7 and min(large) >= 19 and max(large) > 25


@pytest.mark.parametrize("cls", TRANSFORMS)
@pytest.mark.parametrize("size", [(2, 2), (3, 7), (16, 16), (16, 300)])
def test_tiny_and_thin_images_work(cls, size: tuple[int, int]):
    image = random_image(3, *size, seed=5)
    for seed in range(10):
        result = cls()(image, seed=seed)
        assert result.meta["anomalous"]
        assert_contract(image, result)


@pytest.mark.parametrize("cls", TRANSFORMS)
def test_seed_determinism_and_replay(cls):
    transform, image = cls(), random_image(3, 70, 90)
    first, second = transform(image, seed=11), transform(image, seed=11)
    assert torch.equal(first.image, second.image) and torch.equal(first.mask, second.mask)
    assert first.meta == second.meta
    assert transform(image, seed=12).meta["params"] != first.meta["params"]
    replayed = transform.replay(image, first.meta["params"])
    assert torch.equal(replayed.image, first.image) and torch.equal(replayed.mask, first.mask)


@pytest.mark.parametrize("cls", TRANSFORMS)
def test_batch_with_seeds_equals_single_calls(cls):
    transform = cls()
    batch = torch.stack([random_image(3, 48, 64, seed=i) for i in range(4)])
    batch_seeds = [3, 99, 1234, 7]
    result = transform(batch, seeds=batch_seeds)
    for i, seed in enumerate(batch_seeds):
        single = transform(batch[i], seed=seed)
        assert torch.equal(result.image[i], single.image)
        assert torch.equal(result.mask[i], single.mask)
        assert result.meta[i] == single.meta


@pytest.mark.parametrize("cls", TRANSFORMS)
@pytest.mark.parametrize("shape", [(40, 52, 3), (40, 52)])
def test_numpy_and_pil_round_trips(cls, shape: tuple[int, ...]):
    array = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    for image in (array, Image.fromarray(array)):
        result = cls()(image, seed=4)
        out = np.asarray(result.image)
        assert type(result.image) is type(image) and out.dtype == np.uint8 and out.shape == shape
        assert result.mask.dtype == np.float32 and result.mask.shape == shape[:2]
        assert result.meta["anomalous"]
        outside = result.mask == 0
        assert np.array_equal(out[outside], array[outside])
        assert (out != array).reshape(*shape[:2], -1).any(axis=-1)[~outside].any()


@pytest.mark.parametrize(
    "transform",
    [
        CutPaste(),
        CutPaste(area_ratio=(0.05, 0.1), aspect_ratio=(0.5, 2.0), color_jitter=0.0),
        CutPasteScar(),
        CutPasteScar(width=(1, 4), length=(20, 60), reference_size=128, rotation=(0, 90)),
    ],
)
def test_config_round_trip(transform):
    config = transform.to_dict()
    rebuilt = from_dict(config)
    assert rebuilt == transform and rebuilt.to_dict() == config
    image = random_image(3, 32, 48)
    assert torch.equal(rebuilt(image, seed=2).image, transform(image, seed=2).image)


@pytest.mark.parametrize(
    ("cls", "kwargs", "token"),
    [
        (CutPaste, {"area_ratio": (0.2, 0.1)}, "area_ratio"),
        (CutPaste, {"area_ratio": (0.0, 0.1)}, "area_ratio"),
        (CutPaste, {"area_ratio": (0.1, 1.5)}, "1.5"),
        (CutPaste, {"aspect_ratio": (0.0, 2.0)}, "aspect_ratio"),
        (CutPaste, {"aspect_ratio": (3.0, 2.0)}, "aspect_ratio"),
        (CutPaste, {"color_jitter": 0.7}, "color_jitter.*0.7"),
        (CutPaste, {"area_ratio": "big"}, "area_ratio.*big"),
        (CutPasteScar, {"width": (0, 4)}, "width"),
        (CutPasteScar, {"length": (30, 10)}, "length"),
        (CutPasteScar, {"reference_size": 0}, "reference_size"),
        (CutPasteScar, {"reference_size": 2.5}, "reference_size.*2.5"),
        (CutPasteScar, {"rotation": (-400, 0)}, "rotation"),
        (CutPasteScar, {"color_jitter": -0.1}, "color_jitter.*-0.1"),
        (CutPaste, {"color_jitter": "abc"}, "color_jitter must be a number, got 'abc'"),
        (CutPaste, {"color_jitter": None}, "color_jitter must be a number, got None"),
        (CutPasteScar, {"reference_size": True}, "reference_size.*True"),
        (
            CutPasteScar,
            {"reference_size": 3},
            r"width=\(2.0, 16.0\) is longer than reference_size=3:",
        ),
        (
            CutPasteScar,
            {"length": (10, 300)},
            r"length=\(10.0, 300.0\) is longer than reference_size=256",
        ),
    ],
)
def test_bad_parameters_raise(cls, kwargs: dict, token: str):
    with pytest.raises(ValueError, match=token):
        cls(**kwargs)


def test_numpy_integer_reference_size_is_an_int():
    scar = CutPasteScar(reference_size=np.int64(128))
    assert scar.reference_size == 128 and type(scar.reference_size) is int


@pytest.mark.parametrize("cls", [CutPaste, CutPasteScar])
def test_replay_names_a_missing_key(cls):
    transform, image = cls(), random_image(3, 32, 32)
    params = transform(image, seed=0).meta["params"]
    del params["jitter"]
    with pytest.raises(ValueError, match=f"{cls.__name__} parameters lack \\['jitter'\\]"):
        transform.replay(image, params)


@pytest.mark.parametrize("factor", ["brightness", "contrast", "saturation"])
def test_color_jitter_refuses_a_nan_factor(factor):
    """NaN passes a ``< 0`` test; it would fill the patch with NaN pixels."""
    factors = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, factor: math.nan}
    with pytest.raises(ValueError, match="jitter factors must be finite and >= 0"):
        color_jitter(random_image(3, 8, 8), **factors, hue=0.0, order=[0, 1, 2, 3])
