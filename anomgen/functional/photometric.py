"""DRAEM's ten photometric augmenters as pure functions on (C,H,W) float tensors in [0, 1].

DRAEM (Zavrtanik et al., ICCV 2021) alters its anomaly textures with 3 of these imgaug
augmenters, drawn without replacement::

    GammaContrast((0.5, 2.0), per_channel=True)   -> gamma
    MultiplyAndAddToBrightness(mul=(0.8, 1.2),
                               add=(-30, 30))      -> brightness
    pillike.EnhanceSharpness()                     -> sharpness
    AddToHueAndSaturation((-50, 50),
                          per_channel=True)        -> hue_saturation
    Solarize(0.5, threshold=(32, 128))             -> solarize
    Posterize()                                    -> posterize
    Invert()                                       -> invert
    pillike.Autocontrast()                         -> autocontrast
    pillike.Equalize()                             -> equalize
    Affine(rotate=(-45, 45))                       -> rotate

imgaug does not import on numpy 2, so they are re-implemented here in torch (CPU or
CUDA, any float dtype) with imgaug's / PIL's semantics. Every parameter is explicit and
nothing inside is random: ``PHOTOMETRIC_AUGMENTERS[name].sample`` draws the parameters
from DRAEM's ranges with a given ``torch.Generator`` and returns plain JSON-able values.
Intensity parameters are in [0, 1] units (imgaug's 0..255 values divided by 255).
DRAEM's ``Solarize(p=0.5)`` leaves half of the images alone: the sampler then logs a
threshold of 2.0, above every pixel. ``pillike.Autocontrast()`` draws a cutoff of 0..20 %
per image, so ``autocontrast`` takes PIL's ``cutoff`` too.

Deviations from imgaug:

* floats in, floats out: results are not rounded to 256 levels, except ``posterize``,
  ``equalize`` and the histogram bounds of ``autocontrast`` with a cutoff, which are
  defined on them (PIL truncates where these round or keep fractions: < 1/255);
* ``brightness`` always uses the BT.601 luma of YCrCb/YUV and multiplies before it
  adds; imgaug picks one of six colour spaces and the order at random per image;
* ``hue_saturation`` shifts hue continuously (imgaug rounds to OpenCV's 2-degree
  steps; the sampler reproduces imgaug's truncation of the drawn value);
* ``equalize`` follows PIL: imgaug's own code path for images of 64x64 pixels and more
  divides by the count outside bin 255 instead of outside the last non-empty bin.

float32 images on the CPU run ``sharpness``, ``rotate`` and the histograms through
OpenCV (1.5-2x faster there); other devices and dtypes run torch code that the tests
hold to the same results. An image that requires grad gets the same values, to the bit,
and the torch code's gradient (``equalize``, a lookup of pixel counts, has none). Pixel
values are assumed to be in [0, 1] and are not checked (a min/max pass costs as much as
the cheaper ops): anomgen validates images where they enter a transform. Shapes, dtypes
and every parameter are checked.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache, wraps
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from anomgen.core import check_int, finite_number, random_int, random_uniform

__all__ = [
    "PHOTOMETRIC_AUGMENTERS",
    "Augmenter",
    "apply_augmenters",
    "autocontrast",
    "brightness",
    "check_image",
    "equalize",
    "gamma",
    "hue_saturation",
    "invert",
    "posterize",
    "rotate",
    "sample_augmenters",
    "sharpness",
    "solarize",
]

# ITU-R BT.601 luma, the Y of OpenCV's YCrCb and YUV conversions.
_LUMA = (0.299, 0.587, 0.114)
# PIL's ImageFilter.SMOOTH: [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13.
_SMOOTH_CENTRE, _SMOOTH_SUM = 5.0, 13.0
# The solarize sampler's threshold when DRAEM's 50 % coin says "leave the image alone".
_SOLARIZE_OFF = 2.0


# ----------------------------------------------------------------------------- checks


def check_image(img: Any, name: str = "img") -> None:
    """Raise unless ``img`` is a float (C,H,W) tensor with C in {1, 3} and H, W >= 1."""
    if not isinstance(img, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(img).__name__}")
    if not img.is_floating_point():
        raise ValueError(f"{name} must be a float tensor with values in [0, 1], got {img.dtype}")
    if img.ndim != 3 or img.shape[0] not in (1, 3) or img.shape[1] < 1 or img.shape[2] < 1:
        raise ValueError(f"{name} must be (C,H,W) with C in {{1, 3}}, got {tuple(img.shape)}")


def _per_channel(name: str, values: Any, channels: int, low: float, high: float) -> list[float]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence | Tensor):
        raise ValueError(f"{name} must be a sequence of {channels} numbers, got {values!r}")
    if len(values) != channels:
        raise ValueError(f"{name} needs one value per channel ({channels}), got {list(values)}")
    return [finite_number(name, v, low, high) for v in values]


# ----------------------------------------------------------------------------- helpers


def _scalar(value: float, like: Tensor) -> Tensor:
    """A 0-dim tensor, so that ``torch.add(b, x, alpha=a)`` is b + a*x in one op.

    It stays on the CPU: torch passes 0-dim CPU tensors to CUDA kernels as plain numbers,
    without a host-to-device copy.
    """
    return torch.tensor(value, dtype=like.dtype)


def _constant(values: Sequence[float], like: Tensor) -> Tensor:
    """A small tensor of ``values`` on ``like``'s device, copied without a stream sync."""
    constant = torch.tensor(values, dtype=like.dtype)
    return constant if like.device.type == "cpu" else constant.to(like.device, non_blocking=True)


@lru_cache(maxsize=32)
def _step_scale(dtype: torch.dtype) -> float:
    """A power of two K so that K * (a - b) <= -1 whenever a < b (a, b normal floats in [0, 1]).

    ``clamp(1 + K * (a - b), 0, 1)`` is then exactly the step ``a >= b`` as a float, for the
    price of three cheap ops: torch's boolean compare and ``where`` are several times slower
    on the CPU than float arithmetic.
    """
    return 2.0 ** (math.floor(math.log2(torch.finfo(dtype).max)) - 1)


def _opencv_planes(img: Tensor) -> np.ndarray | None:
    """``img`` as a contiguous float32 (C,H,W) array when OpenCV can run the op, else None.

    On the CPU, OpenCV's filter, warp and histogram routines are 1.5-2x faster than the
    equivalent torch ops; other devices and dtypes use the torch code, which the tests
    check against the OpenCV code.
    """
    if img.device.type != "cpu" or img.dtype != torch.float32 or img.requires_grad:
        return None
    return img.contiguous().numpy()


def _log2(img: Tensor) -> Tensor:
    """log2 of a non-negative tensor; numpy's SIMD log2 is ~4x faster than torch's on the CPU."""
    if img.device.type == "cpu" and img.dtype in (torch.float32, torch.float64):
        if not img.requires_grad:
            with np.errstate(divide="ignore"):
                return torch.from_numpy(np.log2(img.numpy()))
    return torch.log2(img)


def _untracked_values(op: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Make ``op(img, ...)`` give the same values whether or not autograd tracks ``img``.

    On the CPU ``op`` runs OpenCV or numpy, which autograd cannot follow, unless ``img``
    requires grad; its torch code then differs in the last bits (rotations by up to 1/32
    of the step between neighbours under OpenCV 4). So a tracked call also runs ``op`` on
    the detached image and returns those values with the torch code's gradient: ``out -
    out.detach()`` is exactly 0.
    """

    @wraps(op)
    def wrapper(img: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        out = op(img, *args, **kwargs)
        if not (isinstance(img, Tensor) and img.requires_grad and img.device.type == "cpu"):
            return out
        return out - out.detach() + op(img.detach(), *args, **kwargs)

    return wrapper


def _level_counts(img: Tensor) -> tuple[Tensor, np.ndarray | Tensor]:
    """(C, 256) int64 counts of each channel's uint8 levels, and the levels for ``_lookup``.

    A level is ``round(255 * x)``, as when the image is saved as uint8.
    """
    channels, height, width = img.shape
    planes = _opencv_planes(img)
    if planes is not None and height * width < 2**24:  # calcHist counts in float32
        stacked = cv2.convertScaleAbs(planes.reshape(channels * height, width), alpha=255.0)
        levels = stacked.reshape(channels, height, width)
        counts = [cv2.calcHist([plane], [0], None, [256], [0, 256]).ravel() for plane in levels]
        return torch.from_numpy(np.stack(counts)).long(), levels
    offsets = torch.arange(0, 256 * channels, 256, dtype=torch.int32, device=img.device)
    flat = img.mul(255.0).round_().to(torch.int32, memory_format=torch.contiguous_format)
    flat = flat.add_(offsets.view(-1, 1, 1)).view(-1)
    return torch.bincount(flat, minlength=256 * channels).view(channels, 256), flat


def _lookup(img: Tensor, levels: np.ndarray | Tensor, table: Tensor) -> Tensor:
    """Map each pixel's level (from ``_level_counts``) through its channel's row of ``table``."""
    channels, height, width = img.shape
    if isinstance(levels, np.ndarray):
        out = np.empty((channels, height, width), np.float32)
        for plane, row, dst in zip(levels, table.numpy(), out):
            cv2.LUT(plane, row, dst=dst)
        return torch.from_numpy(out)
    return table.reshape(-1).index_select(0, levels).view(channels, height, width)


# ------------------------------------------------------------------------- augmenters


@_untracked_values
def gamma(img: Tensor, gammas: Sequence[float]) -> Tensor:
    """imgaug GammaContrast: ``img ** gammas[c]`` per channel (gamma > 0)."""
    check_image(img)
    values = _per_channel("gammas", gammas, img.shape[0], 1e-6, 1e6)
    exponents = _constant(values, img).view(-1, 1, 1)
    # 2 ** (g * log2 x): x in [0, 1] keeps the result in [0, 1]; log2(0) = -inf maps to 0.
    if not img.requires_grad:
        return _log2(img).mul_(exponents).exp2_()
    # Under autograd black pixels would get the gradient 0 * inf = NaN: they take the log
    # of 1 instead, and their 0 is put back without a gradient.
    positive = img > 0
    powered = torch.where(positive, img, 1.0).log2().mul_(exponents).exp2_()
    return torch.where(positive, powered, 0.0)


def brightness(img: Tensor, mul: float, add: float) -> Tensor:
    """imgaug MultiplyAndAddToBrightness: ``Y' = clip(Y * mul + add)`` on the luma Y.

    Changing only Y of YCrCb moves R, G and B by the same amount, ``Y' - Y``, so the
    conversion back and forth collapses to one weighted sum. ``add`` is in [0, 1] units
    (imgaug's -30..30 on 0..255 is -0.118..0.118). Grayscale images use Y = the image.
    """
    check_image(img)
    mul = finite_number("mul", mul, 0.0)
    add = finite_number("add", add, -1.0, 1.0)
    channels, height, width = img.shape
    if channels == 1:
        return torch.add(_scalar(add, img), img, alpha=mul).clamp_(0.0, 1.0)
    weights = _constant(_LUMA, img).view(1, 3)
    luma = (weights @ img.reshape(3, -1)).view(1, height, width)
    shift = torch.add(_scalar(add, img), luma, alpha=mul).clamp_(0.0, 1.0).sub_(luma)
    return (img + shift).clamp_(0.0, 1.0)


@_untracked_values
def sharpness(img: Tensor, factor: float) -> Tensor:
    """PIL ImageEnhance.Sharpness: blend of the image with its SMOOTH-filtered copy.

    ``out = smooth + factor * (img - smooth)``; 0 blurs, 1 is the identity and 2 sharpens.
    As in PIL, the one-pixel border keeps the original values.
    """
    check_image(img)
    factor = finite_number("factor", factor, 0.0)
    channels, height, width = img.shape
    if height < 3 or width < 3:
        return img.clone()
    # smooth = (3x3 sum + (5 - 1) * centre) / 13, blended: one 3x3 kernel.
    side = (1.0 - factor) / _SMOOTH_SUM
    centre = factor + (1.0 - factor) * _SMOOTH_CENTRE / _SMOOTH_SUM
    planes = _opencv_planes(img)
    if planes is not None:
        kernel = np.full((3, 3), side, np.float32)
        kernel[1, 1] = centre
        # Stacked planes only mix at their first and last rows, which are border.
        stacked = cv2.filter2D(planes.reshape(channels * height, width), -1, kernel)
        out = torch.from_numpy(stacked).view(channels, height, width)
    else:
        out = torch.empty_like(img, memory_format=torch.contiguous_format)
        rows = img[:, :, :-2] + img[:, :, 1:-1]
        rows += img[:, :, 2:]
        interior = out[:, 1:-1, 1:-1]
        # Summed straight into the output, unless autograd tracks ``img``: it refuses out=
        # arguments, so the same sums then get a fresh tensor, copied in.
        sums = torch.add(rows[:, :-2], rows[:, 1:-1], out=None if img.requires_grad else interior)
        sums += rows[:, 2:]  # 3x3 sums
        sums.mul_(side).add_(img[:, 1:-1, 1:-1], alpha=centre - side)
        if sums is not interior:
            interior.copy_(sums)
    out[:, 0], out[:, -1] = img[:, 0], img[:, -1]
    out[:, :, 0], out[:, :, -1] = img[:, :, 0], img[:, :, -1]
    return out.clamp_(0.0, 1.0)


def hue_saturation(img: Tensor, hue_shift: float, saturation_shift: float) -> Tensor:
    """imgaug AddToHueAndSaturation: add to H and S of HSV and convert back.

    ``hue_shift`` is in turns (1 = 360 degrees; imgaug's value v means v/255 turns) and
    ``saturation_shift`` in [0, 1] units added to S, which is then clipped to [0, 1]. As
    in OpenCV, grey pixels have hue 0, so raising their saturation tints them red. A
    grayscale image has no hue or saturation and is returned unchanged (imgaug would
    reject it).

    Branch-free RGB->HSV->RGB (after Sam Hocevar's shader formulation) on whole planes,
    without per-pixel branches, argmax or gather (slow on the CPU), and with few
    temporaries: fresh buffers cost page faults that outweigh the arithmetic.
    """
    check_image(img)
    hue_shift = finite_number("hue_shift", hue_shift)
    saturation_shift = finite_number("saturation_shift", saturation_shift, -1.0, 1.0)
    if img.shape[0] == 1:
        return img.clone()
    if img.requires_grad:
        return _hue_saturation_tracked(img, hue_shift, saturation_shift)
    red, green, blue = img.unbind(0)
    gb_max = torch.maximum(green, blue)
    gb_min = torch.minimum(green, blue)
    value = torch.maximum(red, gb_max)
    second = torch.minimum(red, gb_max)  # the larger of the two non-maximal channels
    chroma = torch.minimum(second, gb_min)
    torch.sub(value, chroma, out=chroma)
    hue, spare, spare_too = _hue_sector(red, green, blue, gb_max)
    # hue = |sector + (second - min(g, b)) / (6 * chroma)| in turns, in [0, 1).
    torch.add(_scalar(torch.finfo(img.dtype).tiny, img), chroma, alpha=6.0, out=spare)
    hue.add_(second.sub_(gb_min).div_(spare)).abs_()
    # S' = clip(S + s) with S = chroma / value: chroma' = clip(chroma + s * value, 0, value).
    torch.add(chroma, value, alpha=saturation_shift, out=chroma).clamp_(min=0.0)
    torch.minimum(chroma, value, out=chroma)
    new_min = torch.sub(value, chroma, out=gb_max)
    # HSV->RGB: channel = min' + chroma' * clip(2 - 6 * tri(h + offset), 0, 1), with tri the
    # distance to the nearest integer, |frac(x + 1/2) - 1/2| for x > -1/2, and the
    # offsets 0, -1/3, +1/3 (+ the shift) for red, green and blue.
    phase = hue + _channel_offsets(hue_shift, img)
    phase.frac_().sub_(0.5).abs_()
    top = torch.add(new_min, chroma, alpha=2.0, out=spare_too)
    phase = torch.addcmul(top, chroma.mul_(-6.0), phase, out=phase)
    torch.maximum(phase, new_min, out=phase)
    return torch.minimum(phase, value, out=phase)


def _hue_sector(
    red: Tensor, green: Tensor, blue: Tensor, gb_max: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The hue's sector offset, and two spare buffers of its shape (for reuse).

    From the steps "green >= blue" and "red is the maximum" (see ``_step_scale``): 0 (red
    max, g >= b), -1 (red max, g < b), -1/3 (green max), 2/3 (blue max), which is
    (2/3 - g_ge_b) + r_max * (2 * g_ge_b - 5/3).
    """
    step_scale = _step_scale(red.dtype)
    g_ge_b = torch.sub(green, blue)
    torch.add(_scalar(1.0, red), g_ge_b, alpha=step_scale, out=g_ge_b).clamp_(0.0, 1.0)
    r_max = torch.sub(red, gb_max)
    torch.add(_scalar(1.0, red), r_max, alpha=step_scale, out=r_max).clamp_(0.0, 1.0)
    sector = torch.add(_scalar(2 / 3, red), g_ge_b, alpha=-1.0)
    torch.add(_scalar(-5 / 3, red), g_ge_b, alpha=2.0, out=g_ge_b)
    return sector.addcmul_(r_max, g_ge_b), g_ge_b, r_max


def _channel_offsets(hue_shift: float, like: Tensor) -> Tensor:
    """(3,1,1) phase offsets of red, green and blue for HSV->RGB, plus 1/2 and the shift."""
    shift = hue_shift % 1.0
    return _constant([0.5 + shift, 0.5 - 1 / 3 + shift, 0.5 + 1 / 3 + shift], like).view(3, 1, 1)


def _hue_saturation_tracked(img: Tensor, hue_shift: float, saturation_shift: float) -> Tensor:
    """``hue_saturation`` for an image that autograd tracks: the same ops in the same order
    (so the same values), out of place, as autograd refuses out= arguments and in-place
    changes to tensors it saved.

    The sector is a step function, constant almost everywhere: it is found without
    gradient (its ramps have the slope ``_step_scale``, 2**126 in float32). Grey pixels
    have no hue: they divide 0 by infinity, not by ``tiny``, which keeps their hue at 0
    without a gradient of 1 / tiny.
    """
    red, green, blue = img.unbind(0)
    gb_max, gb_min = torch.maximum(green, blue), torch.minimum(green, blue)
    value, second = torch.maximum(red, gb_max), torch.minimum(red, gb_max)
    chroma = value - torch.minimum(second, gb_min)
    with torch.no_grad():
        sector = _hue_sector(red, green, blue, gb_max)[0]
    divisor = torch.add(_scalar(torch.finfo(img.dtype).tiny, img), chroma, alpha=6.0)
    divisor = torch.where(chroma > 0, divisor, math.inf)
    hue = (sector + (second - gb_min) / divisor).abs()
    chroma = torch.add(chroma, value, alpha=saturation_shift).clamp(min=0.0)
    chroma = torch.minimum(chroma, value)
    new_min = value - chroma
    phase = (hue + _channel_offsets(hue_shift, img)).frac().sub(0.5).abs()
    phase = torch.addcmul(torch.add(new_min, chroma, alpha=2.0), chroma * -6.0, phase)
    return torch.minimum(torch.maximum(phase, new_min), value)


def solarize(img: Tensor, threshold: float) -> Tensor:
    """imgaug Solarize / PIL solarize: invert the pixels >= ``threshold``.

    ``threshold`` is in [0, 1] units (DRAEM's 32..128 is 0.125..0.5); above 1 nothing
    changes.
    """
    check_image(img)
    threshold = finite_number("threshold", threshold, 0.0)
    if threshold > 1.0:
        return img.clone()
    if threshold == 0.0:
        return torch.rsub(img, 1.0)
    # x >= t  <=>  x > t_below, the largest value of the image dtype below t; then
    # K*x - K*t_below >= 1 exactly where the pixel is inverted (see _step_scale).
    below = torch.tensor(threshold, dtype=img.dtype)
    if float(below) >= threshold:
        below = torch.nextafter(below, torch.tensor(-math.inf, dtype=img.dtype))
    scale = _step_scale(img.dtype)
    inverted = torch.add(_scalar(-scale * float(below), img), img, alpha=scale).clamp_(0.0, 1.0)
    return inverted.sub_(img).abs_()  # |1 - x| where inverted, |0 - x| elsewhere


def posterize(img: Tensor, bits: int) -> Tensor:
    """PIL posterize / imgaug Posterize: keep the ``bits`` high bits (1..8) of each uint8 level.

    8 bits only rounds to the nearest of the 256 levels.
    """
    check_image(img)
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or not 1 <= bits <= 8:
        raise ValueError(f"bits must be an integer in 1..8, got {bits!r}")
    step = float(2 ** (8 - int(bits)))
    # level = floor(255 x + 1/2); out = floor(level / step) * step / 255, in one floor.
    levels = torch.add(_scalar(0.5 / step, img), img, alpha=255.0 / step).floor_()
    return levels.mul_(step / 255.0)


def invert(img: Tensor) -> Tensor:
    """imgaug Invert: ``1 - img``."""
    check_image(img)
    return torch.rsub(img, 1.0)


def autocontrast(img: Tensor, cutoff: float = 0.0) -> Tensor:
    """PIL ImageOps.autocontrast: stretch each channel so that its range becomes [0, 1].

    ``cutoff`` is PIL's percentage of the darkest and of the brightest pixels ignored when
    finding the range; those then saturate. With 0 the exact float minimum and maximum are
    used, otherwise the bounds come from PIL's 256-bin histogram. Constant channels are
    left unchanged. PIL truncates the mapped values to integers; this does not.
    """
    check_image(img)
    cutoff = finite_number("cutoff", cutoff, 0.0, 49.0)
    channels, height, width = img.shape
    if cutoff == 0.0:
        low = img.amin(dim=(1, 2))
        high = img.amax(dim=(1, 2))
    else:
        counts, _ = _level_counts(img)
        cut = int(height * width * cutoff // 100)
        cumulative = counts.cumsum(1)
        low_bin = (cumulative <= cut).sum(1)  # first bin whose cumulative count exceeds cut
        at_or_above = height * width - cumulative + counts
        high_bin = (at_or_above > cut).sum(1) - 1
        low, high = low_bin.to(img.dtype) / 255.0, high_bin.to(img.dtype) / 255.0
    flat = high <= low
    scale = torch.where(flat, 1.0, 1.0 / (high - low).clamp_min(1e-12))
    low = torch.where(flat, 0.0, low)
    return (img - low.view(-1, 1, 1)).mul_(scale.view(-1, 1, 1)).clamp_(0.0, 1.0)


def equalize(img: Tensor) -> Tensor:
    """PIL ImageOps.equalize: per-channel histogram equalisation over the 256 uint8 levels.

    PIL's mapping, vectorised: ``step = (N - count of the last non-empty level) // 255``
    and level i maps to ``(step // 2 + pixels below level i) // step``, clipped to 255;
    a channel with a single level or ``step == 0`` is left as it is (rounded to levels).
    """
    check_image(img)
    channels, height, width = img.shape
    counts, levels = _level_counts(img)
    identity = torch.arange(256, device=counts.device)
    occupied = counts > 0
    last_level = (occupied * identity).amax(1, keepdim=True)
    step = (height * width - counts.gather(1, last_level)) // 255
    below = counts.cumsum(1) - counts
    table = ((step // 2 + below) // step.clamp(min=1)).clamp_(max=255)
    keep = (occupied.sum(1, keepdim=True) <= 1) | (step == 0)
    table = torch.where(keep, identity, table).to(img.dtype).div_(255.0)
    return _lookup(img, levels, table)


@_untracked_values
def rotate(img: Tensor, angle_deg: float) -> Tensor:
    """imgaug Affine(rotate=...): rotate about the image centre, bilinear, zeros outside.

    Positive angles turn the content clockwise on screen (x right, y down), as in
    imgaug; the output keeps the input size (corners are cut, new areas are black).
    """
    check_image(img)
    angle = finite_number("angle_deg", angle_deg)
    if angle % 360.0 == 0.0:
        return img.clone()
    channels, height, width = img.shape
    planes = _opencv_planes(img)
    if planes is not None:
        # OpenCV (imgaug's backend) counts angles anticlockwise about pixel-centre coordinates.
        centre = ((width - 1) / 2, (height - 1) / 2)
        matrix = cv2.getRotationMatrix2D(centre, -angle, 1.0)
        out = np.empty_like(planes)
        for plane, dst in zip(planes, out):
            cv2.warpAffine(
                plane, matrix, (width, height), dst=dst, flags=cv2.INTER_LINEAR, borderValue=0
            )
        return torch.from_numpy(out).clamp_(0.0, 1.0)
    # Output pixel -> source pixel: the inverse rotation in grid_sample's normalised
    # coordinates, where both axes span [-1, 1] (hence the aspect-ratio factors).
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    theta = _constant([[cos, sin * height / width, 0.0], [-sin * width / height, cos, 0.0]], img)
    grid = F.affine_grid(theta[None], [1, channels, height, width], align_corners=False)
    out = F.grid_sample(img[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0].clamp_(0.0, 1.0)


# --------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class Augmenter:
    """An augmenter's deterministic ``apply(img, **params)`` and its DRAEM parameter sampler.

    ``sample(generator, channels)`` draws the keyword parameters of ``apply`` using only
    ``generator`` and returns plain JSON-able values.
    """

    apply: Callable[..., Tensor]
    sample: Callable[[torch.Generator, int], dict[str, Any]]


def _sample_gamma(generator: torch.Generator, channels: int) -> dict[str, Any]:
    return {"gammas": [random_uniform(generator, 0.5, 2.0) for _ in range(channels)]}


def _sample_brightness(generator: torch.Generator, channels: int) -> dict[str, Any]:
    return {
        "mul": random_uniform(generator, 0.8, 1.2),
        "add": random_uniform(generator, -30.0, 30.0) / 255.0,
    }


def _sample_sharpness(generator: torch.Generator, channels: int) -> dict[str, Any]:
    return {"factor": random_uniform(generator, 0.0, 2.0)}


def _sample_hue_saturation(generator: torch.Generator, channels: int) -> dict[str, Any]:
    # per_channel=True: hue and saturation get separate integers in [-50, 50] (of 255).
    hue, saturation = random_int(generator, -50, 50), random_int(generator, -50, 50)
    # imgaug maps the hue value to OpenCV's 2-degree units in float32 and truncates.
    opencv_hue = int(np.float32(hue) / np.float32(255.0) * np.float32(180.0))
    return {"hue_shift": opencv_hue / 180.0, "saturation_shift": saturation / 255.0}


def _sample_solarize(generator: torch.Generator, channels: int) -> dict[str, Any]:
    # Solarize(p=0.5): half of the images stay untouched, logged as a threshold above 1.
    fires = random_uniform(generator, 0.0, 1.0) < 0.5
    threshold = random_uniform(generator, 32.0, 128.0) / 255.0
    return {"threshold": threshold if fires else _SOLARIZE_OFF}


def _sample_posterize(generator: torch.Generator, channels: int) -> dict[str, Any]:
    return {"bits": random_int(generator, 1, 8)}


def _sample_nothing(generator: torch.Generator, channels: int) -> dict[str, Any]:
    return {}


def _sample_autocontrast(generator: torch.Generator, channels: int) -> dict[str, Any]:
    # pillike.Autocontrast() draws an integer cutoff of 0..20 % per image.
    return {"cutoff": random_int(generator, 0, 20)}


def _sample_rotate(generator: torch.Generator, channels: int) -> dict[str, Any]:
    return {"angle_deg": random_uniform(generator, -45.0, 45.0)}


# In DRAEM's order (the order of its ``self.augmenters`` list).
PHOTOMETRIC_AUGMENTERS: dict[str, Augmenter] = {
    "gamma": Augmenter(gamma, _sample_gamma),
    "brightness": Augmenter(brightness, _sample_brightness),
    "sharpness": Augmenter(sharpness, _sample_sharpness),
    "hue_saturation": Augmenter(hue_saturation, _sample_hue_saturation),
    "solarize": Augmenter(solarize, _sample_solarize),
    "posterize": Augmenter(posterize, _sample_posterize),
    "invert": Augmenter(invert, _sample_nothing),
    "autocontrast": Augmenter(autocontrast, _sample_autocontrast),
    "equalize": Augmenter(equalize, _sample_nothing),
    "rotate": Augmenter(rotate, _sample_rotate),
}


def _augmenter(name: Any) -> Augmenter:
    if not isinstance(name, str) or name not in PHOTOMETRIC_AUGMENTERS:
        known = ", ".join(PHOTOMETRIC_AUGMENTERS)
        raise ValueError(f"unknown photometric augmenter {name!r}; known: {known}")
    return PHOTOMETRIC_AUGMENTERS[name]


@cache
def _parameter_names(name: str) -> tuple[frozenset[str], frozenset[str]]:
    """(required, allowed) keyword parameters of an augmenter's ``apply``, besides the image."""
    parameters = list(inspect.signature(PHOTOMETRIC_AUGMENTERS[name].apply).parameters.values())
    allowed = frozenset(p.name for p in parameters[1:])
    required = frozenset(p.name for p in parameters[1:] if p.default is inspect.Parameter.empty)
    return required, allowed


def sample_augmenters(
    generator: torch.Generator,
    channels: int,
    k: int = 3,
    names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Pick ``k`` distinct augmenters (DRAEM's ``randAugmenter``) and draw their parameters.

    ``names`` restricts the pool (default: all ten). Returns, in the order to apply,
    ``[{"name": ..., "params": {...}}, ...]``.
    """
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    pool = list(PHOTOMETRIC_AUGMENTERS) if names is None else list(names)
    for name in pool:
        _augmenter(name)
    if len(set(pool)) != len(pool):
        raise ValueError(f"names must be distinct, got {pool}")
    k = check_int("k", k, 0, len(pool))
    order = torch.randperm(len(pool), generator=generator)[:k].tolist()
    return [
        {"name": pool[i], "params": PHOTOMETRIC_AUGMENTERS[pool[i]].sample(generator, channels)}
        for i in order
    ]


def apply_augmenters(img: Tensor, chosen: Sequence[dict[str, Any]]) -> Tensor:
    """Apply ``sample_augmenters`` output to ``img``, in order (a new tensor)."""
    check_image(img)
    out = img.clone() if len(chosen) == 0 else img
    for item in chosen:
        if not isinstance(item, dict) or set(item) != {"name", "params"}:
            raise ValueError(f"each entry needs exactly 'name' and 'params', got {item!r}")
        augmenter, params = _augmenter(item["name"]), item["params"]
        required, allowed = _parameter_names(item["name"])
        if not isinstance(params, dict) or not required <= set(params) <= allowed:
            raise ValueError(f"{item['name']} takes parameters {sorted(allowed)}, got {params!r}")
        out = augmenter.apply(out, **params)
    return out
