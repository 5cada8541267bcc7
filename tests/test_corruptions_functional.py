"""Local corruptions: contracts, determinism, and what each does to an image."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anomgen.functional import corruptions as C

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
LINES = [[[3.0, 4.0], [40.5, 20.25], [55.0, 5.0]], [[10.0, 35.0], [30.0, 38.0]]]

OPS = {
    "gaussian_noise": lambda img: C.gaussian_noise(img, 0.1, 7),
    "gaussian_blur": lambda img: C.gaussian_blur(img, 1.5),
    "color_shift": lambda img: C.color_shift(img, [0.2, -0.3, 0.1][: img.shape[0]]),
    "scratch": lambda img: C.scratch(img, LINES, 2, 0.05)[0],
}


def image(channels: int = 3, height: int = 40, width: int = 60, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.1 + 0.8 * torch.rand((channels, height, width), generator=generator)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(40, 60), (33, 33)])
@pytest.mark.parametrize("name", list(OPS))
def test_shape_dtype_device_range_preserved(name, size, channels, dtype, device):
    img = image(channels, *size).to(device=device, dtype=dtype)
    before = img.clone()
    out = OPS[name](img)
    assert out.shape == img.shape and out.dtype == dtype and out.device == img.device
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert torch.equal(img, before), "the input must not be modified"
    assert not torch.equal(out, img)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", list(OPS))
def test_an_image_that_requires_grad_gives_the_same_values_and_a_gradient(
    name, channels, dtype, device
):
    """Autograd cannot follow OpenCV (the blur's CPU code) nor take out= arguments (the
    noise's): a tracked image takes other code paths, which must agree to the bit."""
    img = image(channels).to(device=device, dtype=dtype)
    img[:, :4, :4] = 0.0
    img[:, 4:8, :4] = 1.0
    expected = OPS[name](img)
    tracked = img.clone().requires_grad_()
    out = OPS[name](tracked)
    assert torch.equal(out.detach(), expected)
    out.sum().backward()
    assert tracked.grad.shape == img.shape and torch.isfinite(tracked.grad).all()


def test_blur_gradient_is_right():
    generator = torch.Generator().manual_seed(0)
    img = torch.rand((3, 9, 11), generator=generator, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: C.gaussian_blur(x, 1.2), (img,), eps=1e-7)


def test_noise_is_deterministic_in_its_seed():
    img = image()
    first = C.gaussian_noise(img, 0.05, 123)
    assert torch.equal(first, C.gaussian_noise(img, 0.05, 123))
    assert not torch.equal(first, C.gaussian_noise(img, 0.05, 124))
    assert torch.equal(C.gaussian_noise(img, 0.0, 123), img)
    grey = torch.full((3, 64, 64), 0.5)
    deviation = (C.gaussian_noise(grey, 0.05, 0) - grey).std().item()
    assert deviation == pytest.approx(0.05, rel=0.05)  # [0, 1] units, no clipping at 0.5 +- 0.2
    assert (C.gaussian_noise(grey, 0.05, 0) - grey).mean().abs() < 0.005


def test_noise_does_not_touch_the_global_generator():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    C.gaussian_noise(image(), 0.1, 5)
    assert torch.equal(torch.rand(3), expected)


def test_blur_reduces_variance_and_keeps_flat_images():
    img = image()
    for sigma in (0.5, 1.0, 3.0):
        assert C.gaussian_blur(img, sigma).var() < 0.7 * img.var()
    assert C.gaussian_blur(img, 3.0).var() < C.gaussian_blur(img, 1.0).var()
    assert torch.equal(C.gaussian_blur(img, 0.0), img)
    flat = torch.full((1, 9, 13), 0.37)
    torch.testing.assert_close(C.gaussian_blur(flat, 2.0), flat)
    # reflect padding keeps the mean (no dark border as with zero padding)
    assert C.gaussian_blur(img, 2.0).mean() == pytest.approx(img.mean().item(), abs=0.01)


@pytest.mark.parametrize("size", [(40, 60), (3, 2), (1, 5), (1, 1)])
@pytest.mark.parametrize("sigma", [0.4, 1.0, 3.0])
def test_blur_opencv_and_torch_code_agree(size, sigma):
    """float32 CPU images use OpenCV, float64 the torch code used on GPUs."""
    img = image(3, *size)
    opencv = C.gaussian_blur(img, sigma)
    plain = C.gaussian_blur(img.double(), sigma)
    torch.testing.assert_close(opencv.double(), plain, atol=1e-5, rtol=0)


def test_blur_matches_a_direct_convolution():
    img = image(1, 20, 24)
    sigma = 1.2
    taps = torch.tensor(C._gaussian_taps(sigma), dtype=torch.float64)
    radius = len(taps) // 2
    padded = torch.nn.functional.pad(img.double()[None], (radius,) * 4, mode="reflect")[0, 0]
    kernel = taps[:, None] * taps[None, :]
    expected = torch.zeros(20, 24, dtype=torch.float64)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            expected += kernel[dy, dx] * padded[dy : dy + 20, dx : dx + 24]
    torch.testing.assert_close(C.gaussian_blur(img, sigma)[0].double(), expected, atol=1e-5, rtol=0)


def test_color_shift_adds_per_channel_and_clips():
    img = torch.full((3, 4, 5), 0.5)
    out = C.color_shift(img, [0.1, -0.2, 0.7])
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([0.6, 0.3, 1.0]))
    torch.testing.assert_close(C.color_shift(img[:1], [-0.5]), torch.zeros(1, 4, 5))


def test_draw_scratches_mask():
    mask = C.draw_scratches((40, 60), LINES, 1)
    assert mask.shape == (1, 40, 60) and mask.dtype == torch.float32
    assert mask.min() == 0 and mask.max() > 0.95
    assert ((mask > 0) & (mask < 0.9)).any(), "lines are anti-aliased"
    assert (mask > 0).sum() > 60
    thick = C.draw_scratches((3, 40, 60), LINES, 4)
    assert (thick > 0).sum() > 2 * (mask > 0).sum() and thick.max() == 1
    assert mask[0, 4, 3] > 0.5 and mask[0, 28:32].sum() == 0
    assert mask[0, 36, 20] > 0.5  # on the line from (10, 35) to (30, 38)
    half = C.draw_scratches((10, 10), [[[2.0, 2.0], [2.0, 8.0]]], 1)
    shifted = C.draw_scratches((10, 10), [[[2.5, 2.0], [2.5, 8.0]]], 1)
    assert not torch.equal(half, shifted), "sub-pixel positions matter"
    outside = C.draw_scratches((10, 10), [[[-50.0, -50.0], [-20.0, -40.0]]], 2)
    assert outside.sum() == 0
    as_double = C.draw_scratches((10, 10), LINES, 1, device="cpu", dtype=torch.float64)
    assert as_double.dtype == torch.float64


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("intensity", [0.0, 1.0, 0.3])
def test_scratch_changes_only_the_mask(intensity, device):
    img = image(3, 40, 60).to(device)
    out, mask = C.scratch(img, LINES, 2, intensity)
    assert mask.shape == (1, 40, 60) and mask.device == img.device and mask.max() == 1
    off = (mask[0] == 0).expand_as(img)
    assert torch.equal(out[off], img[off])
    changed = (out - img).abs().amax(0) > 0
    assert torch.equal(changed, (mask[0] > 0) & ((img - intensity).abs().amax(0) > 0))
    full = (mask[0] == 1).expand_as(img)
    torch.testing.assert_close(out[full], torch.full_like(out[full], intensity))
    if intensity == 0.0:
        assert out[full].max() == 0 and (out <= img).all()
    if intensity == 1.0:
        assert (out >= img).all()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda img: C.gaussian_noise(img, -0.1, 0), "sigma"),
        (lambda img: C.gaussian_noise(img, 0.1, -1), "seed"),
        (lambda img: C.gaussian_noise(img, 0.1, 1.5), "seed"),
        (lambda img: C.gaussian_noise(img, 0.1, True), "seed"),
        (lambda img: C.gaussian_blur(img, float("nan")), "sigma"),
        (lambda img: C.color_shift(img, [0.1, 0.2]), "one value per channel"),
        (lambda img: C.color_shift(img, [0.1, 0.2, 2.0]), "offsets"),
        (lambda img: C.scratch(img, [], 1, 0.5), "at least one polyline"),
        (lambda img: C.scratch(img, [[[1.0, 2.0]]], 1, 0.5), "two"),
        (lambda img: C.scratch(img, [[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]], 1, 0.5), "two"),
        (lambda img: C.scratch(img, [[[1.0, float("nan")], [4.0, 5.0]]], 1, 0.5), "non-finite"),
        (lambda img: C.scratch(img, [[["a", 2.0], [4.0, 5.0]]], 1, 0.5), "numbers"),
        (lambda img: C.scratch(img, LINES, 0, 0.5), "thickness"),
        (lambda img: C.scratch(img, LINES, 2.0, 0.5), "thickness"),
        (lambda img: C.scratch(img, LINES, 1, 1.5), "intensity"),
        (lambda img: C.gaussian_blur(img[0], 1.0), "img must"),
        (lambda img: C.gaussian_noise(img.numpy(), 0.1, 0), "img must"),
        (lambda img: C.color_shift((img * 255).byte(), [0, 0, 0]), "img must"),
    ],
)
def test_rejects_bad_input(call, message):
    with pytest.raises((TypeError, ValueError), match=message):
        call(image())


def test_draw_scratches_rejects_bad_shape():
    with pytest.raises(ValueError, match="img_shape"):
        C.draw_scratches((10,), LINES, 1)
    with pytest.raises(ValueError, match="height"):
        C.draw_scratches((0, 10), LINES, 1)


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(list(OPS)),
    channels=st.sampled_from([1, 3]),
    height=st.integers(1, 48),
    width=st.integers(1, 48),
    seed=st.integers(0, 2**31 - 1),
)
def test_any_size(name, channels, height, width, seed):
    img = torch.rand((channels, height, width), generator=torch.Generator().manual_seed(seed))
    out = OPS[name](img)
    assert out.shape == img.shape and out.dtype == img.dtype
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, OPS[name](img))
