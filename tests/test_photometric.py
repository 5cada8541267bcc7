"""DRAEM's photometric augmenters: contracts, known values, PIL/OpenCV references, sampling."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageEnhance, ImageOps

from anomgen.functional import photometric as P
from tests.conftest import OPENCV_WARP_ATOL

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
NAMES = list(P.PHOTOMETRIC_AUGMENTERS)

# One explicit, effective parameter set per augmenter (solarize with a live threshold).
FIXED = {
    "gamma": lambda c: {"gammas": [0.6, 1.4, 1.9][:c]},
    "brightness": lambda c: {"mul": 1.15, "add": -20 / 255},
    "sharpness": lambda c: {"factor": 1.8},
    "hue_saturation": lambda c: {"hue_shift": 0.15, "saturation_shift": 0.2},
    "solarize": lambda c: {"threshold": 0.4},
    "posterize": lambda c: {"bits": 3},
    "invert": lambda c: {},
    "autocontrast": lambda c: {"cutoff": 10},
    "equalize": lambda c: {},
    "rotate": lambda c: {"angle_deg": 33.0},
}


def texture(channels: int = 3, height: int = 48, width: int = 64, seed: int = 0) -> torch.Tensor:
    """A smooth random texture in [0.15, 0.85]: blurred noise, so filters and warps bite."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand((channels, height // 4 + 2, width // 4 + 2), generator=generator)
    smooth = torch.nn.functional.interpolate(noise[None], size=(height, width), mode="bilinear")
    fine = torch.rand((channels, height, width), generator=generator)
    return (0.15 + 0.55 * smooth[0] + 0.15 * fine).clamp(0, 1)


def uint8_image(height: int = 41, width: int = 57, seed: int = 0) -> np.ndarray:
    """A random RGB uint8 image with grey pixels and ties between channels."""
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image[:5, :5] = 128
    image[5:10, :5, 0] = image[5:10, :5, 1]
    image[10:15, :5, 2] = image[10:15, :5, 0]
    return image


def to_tensor(array) -> torch.Tensor:
    array = np.array(array)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1).float() / 255


# ------------------------------------------------------------------------- contracts


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(23, 37), (32, 32)])
@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_device_range_preserved(name, size, channels, dtype, device):
    image = texture(channels, *size).to(device=device, dtype=dtype)
    before = image.clone()
    out = P.PHOTOMETRIC_AUGMENTERS[name].apply(image, **FIXED[name](channels))
    assert out.shape == image.shape and out.dtype == dtype and out.device == image.device
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert torch.equal(image, before), "the input must not be modified"
    assert out.data_ptr() != image.data_ptr()


def test_every_augmenter_is_covered_by_the_parametrized_tests():
    """NAMES comes from the registry: an emptied or renamed registry would leave the
    parametrized tests with nothing to run (pytest skips an empty parameter set)."""
    assert NAMES and set(NAMES) == set(FIXED)


def test_non_contiguous_input():
    image = texture(3, 40, 30).permute(0, 2, 1)  # (3, 30, 40) view
    for name in NAMES:
        out = P.PHOTOMETRIC_AUGMENTERS[name].apply(image, **FIXED[name](3))
        expected = P.PHOTOMETRIC_AUGMENTERS[name].apply(image.contiguous(), **FIXED[name](3))
        torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "call",
    [
        lambda img: P.sharpness(img, 0.3),
        lambda img: P.rotate(img, 27.0),
        lambda img: P.equalize(img),
        lambda img: P.autocontrast(img, 5),
    ],
    ids=["sharpness", "rotate", "equalize", "autocontrast"],
)
def test_torch_code_matches_opencv_code(call):
    """float32 CPU images take the OpenCV code, float64 the torch code used on GPUs."""
    for channels in (1, 3):
        # on the 256 levels, so that float32 and float64 round 255 * x alike
        image = (texture(channels, 37, 52, seed=channels) * 255).round() / 255
        opencv = call(image)
        plain = call(image.double())
        torch.testing.assert_close(opencv.double(), plain, atol=OPENCV_WARP_ATOL + 1e-5, rtol=0)


# ----------------------------------------------------------------------- known values


def test_gamma():
    image = texture()
    torch.testing.assert_close(P.gamma(image, [1.0, 1.0, 1.0]), image, atol=1e-6, rtol=0)
    expected = image ** torch.tensor([0.5, 1.0, 2.0]).view(3, 1, 1)
    torch.testing.assert_close(P.gamma(image, [0.5, 1.0, 2.0]), expected, atol=1e-6, rtol=0)
    assert P.gamma(torch.zeros(1, 4, 4), [0.7]).eq(0).all()


def test_invert_twice_is_identity():
    image = texture()
    torch.testing.assert_close(P.invert(P.invert(image)), image, atol=1e-6, rtol=0)
    torch.testing.assert_close(P.invert(torch.full((1, 2, 2), 0.3)), torch.full((1, 2, 2), 0.7))


def test_posterize_matches_pil_and_8_bits_only_rounds():
    array = uint8_image()
    image = to_tensor(array)
    for bits in range(1, 9):
        expected = to_tensor(ImageOps.posterize(Image.fromarray(array), bits))
        torch.testing.assert_close(P.posterize(image, bits), expected, atol=1e-5, rtol=0)
    smooth = texture()
    eight = P.posterize(smooth, 8)
    torch.testing.assert_close(eight, (smooth * 255).round() / 255, atol=1e-5, rtol=0)
    assert (eight - smooth).abs().max() <= 0.5 / 255 + 1e-6
    assert set(P.posterize(smooth, 1).unique().mul(255).round().tolist()) <= {0.0, 128.0}


def test_solarize():
    image = texture()
    assert torch.equal(P.solarize(image, 1.01), image)
    assert torch.equal(P.solarize(image, 2.0), image)
    torch.testing.assert_close(P.solarize(image, 0.0), 1 - image)
    array = uint8_image()
    for threshold in (32, 77.3, 128):
        expected = ImageOps.solarize(Image.fromarray(array), threshold=math.ceil(threshold))
        out = P.solarize(to_tensor(array), threshold / 255)
        torch.testing.assert_close(out, to_tensor(expected), atol=1e-5, rtol=0)
    # pixels exactly at the threshold are inverted (>=), those just below are not
    edge = torch.tensor([[[0.4, np.nextafter(np.float32(0.4), 0), 0.6]]])
    torch.testing.assert_close(P.solarize(edge, 0.4), torch.tensor([[[0.6, edge[0, 0, 1], 0.4]]]))


def test_equalize_matches_pil():
    array = uint8_image()
    torch.testing.assert_close(
        P.equalize(to_tensor(array)), to_tensor(ImageOps.equalize(Image.fromarray(array)))
    )
    dark = array // 3  # channels whose maximum is below 255
    torch.testing.assert_close(
        P.equalize(to_tensor(dark)), to_tensor(ImageOps.equalize(Image.fromarray(dark)))
    )
    grey = array[:, :, 0]
    torch.testing.assert_close(
        P.equalize(to_tensor(grey)), to_tensor(ImageOps.equalize(Image.fromarray(grey)))
    )


def test_equalize_uniform_histogram_is_identity_and_output_is_flat():
    levels = torch.randperm(64 * 64, generator=torch.Generator().manual_seed(0)) % 256
    uniform = (levels.view(1, 64, 64).float() / 255).repeat(3, 1, 1)
    torch.testing.assert_close(P.equalize(uniform), uniform, atol=1e-6, rtol=0)
    skewed = torch.rand((3, 128, 128), generator=torch.Generator().manual_seed(1)) ** 3
    out = P.equalize(skewed)
    for channel in out:
        counts = torch.histc(channel, bins=8, min=0, max=1)
        assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()
    assert torch.histc(skewed[0], bins=8, min=0, max=1)[0] > 3 * (128 * 128 / 8)
    constant = torch.full((1, 8, 8), 0.4)
    torch.testing.assert_close(P.equalize(constant), (constant * 255).round() / 255)


def test_autocontrast():
    generator = torch.Generator().manual_seed(0)
    image = 0.2 + 0.4 * torch.rand((3, 30, 40), generator=generator)
    image[:, 0, 0], image[:, -1, -1] = 0.2, 0.6
    out = P.autocontrast(image)
    torch.testing.assert_close(out, (image - 0.2) / 0.4, atol=1e-5, rtol=0)
    assert out.amin() == 0 and out.amax() == pytest.approx(1.0, abs=1e-6)
    constant = torch.full((1, 5, 5), 0.3)
    assert torch.equal(P.autocontrast(constant), constant)
    assert torch.equal(P.autocontrast(constant, 10), constant)


@pytest.mark.parametrize("cutoff", [0, 5, 20])
def test_autocontrast_matches_pil(cutoff):
    array = (uint8_image() * 0.4 + 50).astype(np.uint8)
    expected = to_tensor(ImageOps.autocontrast(Image.fromarray(array), cutoff=cutoff))
    out = P.autocontrast(to_tensor(array), cutoff)
    # PIL truncates the stretched levels to integers
    assert (out - expected).abs().max() <= 1 / 255 + 1e-6


def test_rotate():
    image = texture(3, 32, 32)
    assert torch.equal(P.rotate(image, 0.0), image)
    assert torch.equal(P.rotate(image, 360.0), image)
    torch.testing.assert_close(
        P.rotate(image, 90.0), torch.rot90(image, -1, (1, 2)), atol=1e-5, rtol=0
    )
    wide = texture(1, 20, 30)  # the centred 20x20 square maps onto itself
    centre = slice(5, 25)
    torch.testing.assert_close(
        P.rotate(wide, 90.0)[:, :, centre],
        torch.rot90(wide[:, :, centre], -1, (1, 2)),
        atol=1e-5,
        rtol=0,
    )
    dot = torch.zeros(1, 9, 9)
    dot[0, 0, 4] = 1.0  # top centre
    assert P.rotate(dot, 90.0)[0, 4, 8] == pytest.approx(1.0, abs=1e-5)  # clockwise: to the right
    corners = P.rotate(torch.ones(3, 16, 16), 45.0)
    assert corners[:, 0, 0].max() == 0 and corners[:, 8, 8].min() == pytest.approx(1.0)


def test_rotate_matches_opencv_affine():
    """imgaug's Affine(rotate=a) is cv2.warpAffine about the pixel-centre middle by -a.

    (OpenCV 5 interpolates float32 exactly; its float64 warp, and OpenCV 4's float32 one,
    use 1/32-pixel fixed point.)
    """
    image = texture(3, 37, 52)
    height, width = image.shape[1:]
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), -30.0, 1.0)
    hwc = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
    expected = cv2.warpAffine(hwc, matrix, (width, height), flags=cv2.INTER_LINEAR, borderValue=0)
    expected = torch.from_numpy(expected).permute(2, 0, 1)
    atol = OPENCV_WARP_ATOL
    torch.testing.assert_close(P.rotate(image, 30.0), expected, atol=atol, rtol=0)
    torch.testing.assert_close(P.rotate(image.double(), 30.0), expected.double(), atol=atol, rtol=0)


@pytest.mark.parametrize("factor", [0.0, 0.25, 0.5, 0.9, 1.0, 1.7, 2.0])
def test_sharpness_matches_pil(factor):
    array = uint8_image()
    image = to_tensor(array)
    out = P.sharpness(image, factor)
    expected = to_tensor(ImageEnhance.Sharpness(Image.fromarray(array)).enhance(factor))
    # PIL rounds the smoothed image (1/2 level, scaled by |1 - f| in the blend) and
    # truncates the blend (< 1 level); the interior agrees within that.
    error = (out - expected)[:, 1:-1, 1:-1].abs()
    assert error.max() <= (0.5 * abs(1 - factor) + 1) / 255 + 1e-6
    assert error.mean() <= 0.5 / 255
    assert torch.equal(out[:, 0], image[:, 0]) and torch.equal(out[:, -1], image[:, -1])
    assert torch.equal(out[:, :, 0], image[:, :, 0]) and torch.equal(out[:, :, -1], image[:, :, -1])
    if factor == 1.0:
        assert torch.equal(out, image)


def test_sharpness_on_images_too_small_for_the_kernel():
    image = texture(3, 2, 9)
    assert torch.equal(P.sharpness(image, 0.0), image)


def test_brightness_uses_0_1_units():
    grey = torch.full((3, 8, 8), 0.5)
    torch.testing.assert_close(
        P.brightness(grey, 1.0, 30 / 255), torch.full_like(grey, 0.5 + 30 / 255)
    )
    torch.testing.assert_close(P.brightness(grey, 1.2, 0.0), torch.full_like(grey, 0.6))
    single = torch.full((1, 4, 4), 0.9)
    torch.testing.assert_close(P.brightness(single, 1.2, 0.1), torch.ones_like(single))


@pytest.mark.parametrize("mul, add", [(1.0, 0.0), (1.2, 30 / 255), (0.8, -30 / 255)])
def test_brightness_matches_ycrcb_luma_change(mul, add):
    image = texture()
    hwc = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
    ycrcb = cv2.cvtColor(hwc, cv2.COLOR_RGB2YCrCb)
    ycrcb[..., 0] = np.clip(ycrcb[..., 0] * mul + add, 0, 1)
    expected = np.clip(cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB), 0, 1)
    out = P.brightness(image, mul, add)
    torch.testing.assert_close(out, torch.from_numpy(expected).permute(2, 0, 1), atol=1e-3, rtol=0)


def test_hue_saturation_identity_and_grayscale():
    image = texture()
    torch.testing.assert_close(P.hue_saturation(image, 0.0, 0.0), image, atol=1e-5, rtol=0)
    torch.testing.assert_close(P.hue_saturation(image, 1.0, 0.0), image, atol=1e-5, rtol=0)
    grey = texture(1)
    assert torch.equal(P.hue_saturation(grey, 0.3, 0.4), grey)
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    torch.testing.assert_close(
        P.hue_saturation(red, 1 / 3, 0.0), torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1)
    )
    # OpenCV gives grey pixels hue 0, so more saturation tints them red
    tinted = P.hue_saturation(torch.full((3, 1, 1), 0.5), 0.0, 0.5).flatten()
    torch.testing.assert_close(tinted, torch.tensor([0.5, 0.25, 0.25]))


@pytest.mark.parametrize(
    "hue, saturation",
    [(0.1, 0.0), (-0.3, 0.2), (0.5, -0.2), (0.05, 0.3), (1.7, 1.0), (-35 / 180, -50 / 255)],
)
def test_hue_saturation_matches_opencv_hsv(hue, saturation):
    image = to_tensor(uint8_image())
    hsv = cv2.cvtColor(np.ascontiguousarray(image.permute(1, 2, 0).numpy()), cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + hue * 360) % 360
    hsv[..., 1] = np.clip(hsv[..., 1] + saturation, 0, 1)
    expected = torch.from_numpy(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)).permute(2, 0, 1)
    torch.testing.assert_close(
        P.hue_saturation(image, hue, saturation), expected, atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        P.hue_saturation(image.double(), hue, saturation), expected.double(), atol=1e-4, rtol=0
    )


# ------------------------------------------------------------------------- autograd


def with_edge_pixels(image: torch.Tensor) -> torch.Tensor:
    """``image`` with black, white and grey pixels and ties between channels, where the
    gradients of log, division and step functions can blow up."""
    image = image.clone()
    image[:, :3, :3] = 0.0
    image[:, 3:6, :3] = 1.0
    image[:, 6:9, :3] = 0.5
    if image.shape[0] == 3:
        image[1, 9:12, :3] = image[2, 9:12, :3]  # green == blue
        image[0, 12:15, :3] = image[1, 12:15, :3]  # red == green
    return image


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", NAMES)
def test_an_image_that_requires_grad_gives_the_same_values_and_a_gradient(
    name, channels, dtype, device
):
    """Autograd refuses out= arguments and changes to tensors it saved, and cannot follow
    OpenCV: a tracked image takes other code paths, which must agree to the bit."""
    image = with_edge_pixels(texture(channels, 23, 37)).to(device=device, dtype=dtype)
    params = FIXED[name](channels)
    expected = P.PHOTOMETRIC_AUGMENTERS[name].apply(image, **params)
    tracked = image.clone().requires_grad_()
    out = P.PHOTOMETRIC_AUGMENTERS[name].apply(tracked, **params)
    assert torch.equal(out.detach(), expected)
    if name == "equalize":  # a lookup table of pixel counts: no gradient to give
        assert not out.requires_grad
        return
    out.sum().backward()
    assert tracked.grad.shape == image.shape and torch.isfinite(tracked.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", range(6))
def test_hue_saturation_tracked_code_matches_the_in_place_code(seed, dtype):
    generator = torch.Generator().manual_seed(seed)
    image = with_edge_pixels(torch.rand((3, 31, 29), generator=generator, dtype=dtype))
    hue, saturation = (torch.rand(2, generator=generator, dtype=torch.float64) * 2 - 1).tolist()
    fast = P.hue_saturation(image, hue, saturation)
    assert torch.equal(P._hue_saturation_tracked(image, hue, saturation), fast)
    tracked = P.hue_saturation(image.clone().requires_grad_(), hue, saturation)
    assert tracked.requires_grad and torch.equal(tracked.detach(), fast)


@pytest.mark.parametrize(
    "call",
    [
        lambda img: P.gamma(img, [0.6, 1.4, 1.9]),
        lambda img: P.sharpness(img, 1.8),
        lambda img: P.hue_saturation(img, 0.15, 0.2),
        lambda img: P.hue_saturation(img, -0.4, -0.3),
        lambda img: P.rotate(img, 33.0),
    ],
    ids=["gamma", "sharpness", "hue_saturation", "hue_saturation_down", "rotate"],
)
def test_gradients_of_the_tracked_code_are_right(call):
    """Checked against finite differences, away from the kinks (ties, clipping, black)."""
    generator = torch.Generator().manual_seed(0)
    image = 0.1 + 0.8 * torch.rand((3, 9, 11), generator=generator, dtype=torch.float64)
    image.requires_grad_()
    assert torch.autograd.gradcheck(call, (image,), eps=1e-7, atol=1e-5)


def test_black_and_grey_pixels_get_zero_gradient_where_it_is_undefined():
    """gamma's 2 ** (g log2 x) would give black pixels 0 * inf = NaN; hue_saturation's grey
    pixels have no hue, whose gradient there would be 1 / tiny."""
    image = with_edge_pixels(texture(3, 20, 20)).requires_grad_()
    P.gamma(image, [0.5, 2.0, 1.0]).sum().backward()
    assert torch.isfinite(image.grad).all() and (image.grad[:, :3, :3] == 0).all()
    image.grad = None
    P.hue_saturation(image, 0.2, 0.3).sum().backward()
    assert torch.isfinite(image.grad).all()


# -------------------------------------------------------------------------- sampling


def sampled(name: str, seed: int, channels: int = 3) -> dict:
    return P.PHOTOMETRIC_AUGMENTERS[name].sample(torch.Generator().manual_seed(seed), channels)


def test_sampled_parameters_lie_in_draem_ranges():
    seeds = range(200)
    for channels in (1, 3):
        gammas = [g for s in seeds for g in sampled("gamma", s, channels)["gammas"]]
        assert len(gammas) == 200 * channels and 0.5 <= min(gammas) and max(gammas) <= 2.0
    brightness = [sampled("brightness", s) for s in seeds]
    assert all(0.8 <= p["mul"] <= 1.2 and abs(p["add"]) <= 30 / 255 for p in brightness)
    assert all(0.0 <= sampled("sharpness", s)["factor"] <= 2.0 for s in seeds)
    for p in (sampled("hue_saturation", s) for s in seeds):
        opencv_hue, saturation = p["hue_shift"] * 180, p["saturation_shift"] * 255
        assert abs(opencv_hue - round(opencv_hue)) < 1e-9 and abs(opencv_hue) <= 35
        assert abs(saturation - round(saturation)) < 1e-9 and abs(saturation) <= 50
    thresholds = [sampled("solarize", s)["threshold"] for s in seeds]
    live = [t for t in thresholds if t <= 1]
    assert all(32 / 255 <= t <= 128 / 255 for t in live)
    assert all(t > 1 for t in thresholds if t not in live)
    assert 0.35 < len(live) / len(thresholds) < 0.65  # Solarize(p=0.5)
    assert {sampled("posterize", s)["bits"] for s in seeds} == set(range(1, 9))
    assert {sampled("autocontrast", s)["cutoff"] for s in seeds} <= set(range(21))
    assert all(-45 <= sampled("rotate", s)["angle_deg"] <= 45 for s in seeds)
    assert sampled("invert", 0) == {} and sampled("equalize", 0) == {}


@pytest.mark.parametrize("name", NAMES)
def test_sampling_is_deterministic_json_able_and_replayable(name):
    params = sampled(name, 7)
    assert params == sampled(name, 7)
    assert json.loads(json.dumps(params)) == params
    image = texture()
    augmenter = P.PHOTOMETRIC_AUGMENTERS[name]
    assert torch.equal(augmenter.apply(image, **params), augmenter.apply(image, **params))


@pytest.mark.parametrize("name", NAMES)
def test_sampled_augmenters_really_change_a_texture(name):
    """Guards against scale bugs (uint8 vs [0, 1]) that would make an augmenter a no-op."""
    image = texture(3, 64, 64)
    changes = []
    for seed in range(20):
        out = P.PHOTOMETRIC_AUGMENTERS[name].apply(image, **sampled(name, seed))
        changes.append((out - image).abs().mean().item())
    changed = sum(c > 1e-3 for c in changes) / len(changes)
    assert changed >= (0.3 if name == "solarize" else 0.8), changes
    assert max(changes) < 0.9


def test_brightness_scale_guard():
    """imgaug's add of 30 (of 255) moves mid-grey by ~0.12: not by 30, not by 30/255**2."""
    grey = torch.full((3, 4, 4), 0.5)
    change = (P.brightness(grey, 1.0, 30 / 255) - grey).mean().item()
    assert 0.11 < change < 0.125


def test_sample_augmenters_picks_distinct_augmenters():
    seen = set()
    for seed in range(60):
        chosen = P.sample_augmenters(torch.Generator().manual_seed(seed), 3)
        names = [c["name"] for c in chosen]
        assert len(names) == 3 == len(set(names)) and set(names) <= set(NAMES)
        assert chosen == P.sample_augmenters(torch.Generator().manual_seed(seed), 3)
        assert json.loads(json.dumps(chosen)) == chosen
        seen.update(names)
    assert seen == set(NAMES)
    everything = P.sample_augmenters(torch.Generator().manual_seed(0), 1, k=10)
    assert sorted(c["name"] for c in everything) == sorted(NAMES)
    assert P.sample_augmenters(torch.Generator().manual_seed(0), 3, k=0) == []
    subset = P.sample_augmenters(
        torch.Generator().manual_seed(0), 3, k=2, names=["invert", "gamma"]
    )
    assert {c["name"] for c in subset} == {"invert", "gamma"}


def test_sample_augmenters_rejects_bad_arguments():
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="known: gamma, brightness"):
        P.sample_augmenters(generator, 3, names=["gamma", "blur"])
    with pytest.raises(ValueError, match="distinct"):
        P.sample_augmenters(generator, 3, k=1, names=["gamma", "gamma"])
    with pytest.raises(ValueError, match="k must"):
        P.sample_augmenters(generator, 3, k=4, names=["gamma", "invert"])
    with pytest.raises(ValueError, match="channels"):
        P.sample_augmenters(generator, 4)


def test_apply_augmenters_applies_in_order():
    image = texture()
    chosen = P.sample_augmenters(torch.Generator().manual_seed(3), 3, k=3)
    expected = image
    for item in chosen:
        expected = P.PHOTOMETRIC_AUGMENTERS[item["name"]].apply(expected, **item["params"])
    before = image.clone()
    assert torch.equal(P.apply_augmenters(image, chosen), expected)
    assert torch.equal(image, before)
    swapped = [{"name": "invert", "params": {}}, {"name": "gamma", "params": {"gammas": [2, 2, 2]}}]
    assert not torch.allclose(
        P.apply_augmenters(image, swapped), P.apply_augmenters(image, swapped[::-1])
    )
    empty = P.apply_augmenters(image, [])
    assert torch.equal(empty, image) and empty.data_ptr() != image.data_ptr()


def test_apply_augmenters_rejects_bad_entries():
    image = texture()
    with pytest.raises(ValueError, match="known: gamma"):
        P.apply_augmenters(image, [{"name": "sepia", "params": {}}])
    with pytest.raises(ValueError, match="takes parameters"):
        P.apply_augmenters(image, [{"name": "gamma", "params": {"gamma": 2.0}}])
    with pytest.raises(ValueError, match="takes parameters"):
        P.apply_augmenters(image, [{"name": "rotate", "params": {}}])
    with pytest.raises(ValueError, match="'name' and 'params'"):
        P.apply_augmenters(image, [{"name": "invert"}])


# ------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((3, 4, 4), np.float32),
        torch.zeros(3, 4, 4, dtype=torch.uint8),
        torch.zeros(2, 4, 4),
        torch.zeros(4, 4),
        torch.zeros(1, 3, 4, 4),
        torch.zeros(3, 0, 4),
    ],
    ids=["numpy", "uint8", "2 channels", "2-d", "batched", "empty"],
)
@pytest.mark.parametrize("name", NAMES)
def test_rejects_bad_images(name, bad):
    with pytest.raises((TypeError, ValueError), match="img must"):
        P.PHOTOMETRIC_AUGMENTERS[name].apply(bad, **FIXED[name](3))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda img: P.gamma(img, [1.0, 1.0]), "one value per channel"),
        (lambda img: P.gamma(img, [1.0, -1.0, 1.0]), "gammas"),
        (lambda img: P.gamma(img, 1.0), "gammas"),
        (lambda img: P.brightness(img, -1.0, 0.0), "mul"),
        (lambda img: P.brightness(img, 1.0, 30), "add"),
        (lambda img: P.sharpness(img, float("nan")), "factor"),
        (lambda img: P.hue_saturation(img, 0.1, 2.0), "saturation_shift"),
        (lambda img: P.solarize(img, -0.1), "threshold"),
        (lambda img: P.posterize(img, 0), "bits"),
        (lambda img: P.posterize(img, 4.0), "bits"),
        (lambda img: P.posterize(img, True), "bits"),
        (lambda img: P.autocontrast(img, 60), "cutoff"),
        (lambda img: P.rotate(img, float("inf")), "angle_deg"),
    ],
)
def test_rejects_bad_parameters(call, message):
    with pytest.raises(ValueError, match=message):
        call(texture())


# ---------------------------------------------------------------------- property test


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    channels=st.sampled_from([1, 3]),
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    seed=st.integers(0, 2**31 - 1),
)
def test_any_size_and_sampled_parameters(name, channels, height, width, seed):
    image = torch.rand((channels, height, width), generator=torch.Generator().manual_seed(seed))
    params = sampled(name, seed, channels)
    out = P.PHOTOMETRIC_AUGMENTERS[name].apply(image, **params)
    assert out.shape == image.shape and out.dtype == image.dtype
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, P.PHOTOMETRIC_AUGMENTERS[name].apply(image, **params))
