"""Joint image + mask geometry for pasting real defects: foreground, boxes, warps.

Every function is pure: all choices arrive as arguments (random fields as an integer
seed), so a logged parameter set reproduces a result bit for bit. Images are float
``(C,H,W)`` tensors in [0, 1] with C in {1, 3}; masks are ``(1,H,W)`` with the same H, W.
Warps run through OpenCV on CPU numpy copies (``warpAffine``/``remap`` are the right
tools and several times faster than ``grid_sample`` on the CPU); results come back on
the input's device. An image is resampled bilinearly with replicated borders (a defect
at the edge of its patch must not fade to black), its mask bilinearly with zero borders
and re-thresholded at 0.5, so masks stay binary after every warp.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import torch

from anomgen.functional.cutpaste import color_jitter as _torchvision_jitter

__all__ = [
    "bbox",
    "color_jitter",
    "elastic_distort",
    "foreground_mask",
    "match_channels",
    "optical_distort",
    "warp_patch",
]

# ITU-R 601 luma, the weights torchvision and OpenCV use for RGB -> grey.
_LUMA = (0.299, 0.587, 0.114)
FOREGROUND_METHODS = ("otsu", "threshold")


def check_image(image: Any, name: str = "image") -> None:
    """Raise ValueError unless ``image`` is a float (C,H,W) tensor, C in {1,3}, in [0, 1]."""
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] not in (1, 3):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{name} must be a (C,H,W) tensor with C in {{1,3}}, got {shape}")
    if not image.is_floating_point():
        raise ValueError(f"{name} must be float in [0, 1], got dtype {image.dtype}")
    if image.numel() == 0:
        raise ValueError(f"{name} is empty: {tuple(image.shape)}")
    low, high = torch.aminmax(image.detach())  # float() of a grad-tracking tensor warns
    if not (0 <= float(low) and float(high) <= 1):  # NaN fails both comparisons
        raise ValueError(f"{name} must hold finite values in [0, 1]")


def check_mask(mask: Any, image: torch.Tensor, name: str = "mask") -> None:
    """Raise ValueError unless ``mask`` is a (1,H,W) tensor matching ``image``'s H, W."""
    if not isinstance(mask, torch.Tensor) or mask.ndim != 3 or mask.shape[0] != 1:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{name} must be a (1,H,W) tensor, got {shape}")
    if mask.shape[1:] != image.shape[1:]:
        raise ValueError(
            f"{name} has shape {tuple(mask.shape)} but the image is {tuple(image.shape)}"
        )


def match_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """``image`` with ``channels`` channels: RGB -> luma grey, or grey repeated to RGB."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if image.shape[0] == channels:
        return image
    if channels == 1:
        weights = image.new_tensor(_LUMA).view(3, 1, 1)
        return (image * weights).sum(0, keepdim=True).clamp(0, 1)
    return image.expand(3, -1, -1).contiguous()


def foreground_mask(
    image: torch.Tensor,
    method: str = "otsu",
    threshold: float | None = None,
    invert: bool = False,
) -> torch.Tensor:
    """A (1,H,W) bool mask of the object, to keep pasted defects on it.

    ``"otsu"`` thresholds the 8-bit grey image at Otsu's level (bright object on a dark
    background, MVTec/MTD style); ``"threshold"`` uses ``threshold`` in [0, 1] on the grey
    image. ``invert`` swaps object and background (dark object on a bright background).
    A flat image has nothing to separate: Otsu then marks all of it (none when inverted).
    """
    check_image(image)
    grey = match_channels(image, 1)
    if method == "otsu":
        if threshold is not None:
            raise ValueError(f"method 'otsu' picks its own threshold; got threshold={threshold!r}")
        grey_u8 = (grey[0] * 255).round().to(torch.uint8).cpu().numpy()
        if grey_u8.min() == grey_u8.max():  # Otsu's level would leave a black image unmarked
            foreground = torch.ones_like(grey, dtype=torch.bool)
        else:
            level, _ = cv2.threshold(grey_u8, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
            foreground = torch.from_numpy(grey_u8 > level)[None].to(image.device)
    elif method == "threshold":
        if threshold is None or not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"method 'threshold' needs a threshold in [0, 1], got {threshold!r}")
        foreground = grey > float(threshold)
    else:
        raise ValueError(f"unknown foreground method {method!r}; use one of {FOREGROUND_METHODS}")
    return ~foreground if invert else foreground


def bbox(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """``(top, left, bottom, right)`` of the non-zero pixels; bottom/right are exclusive.

    ``mask[..., top:bottom, left:right]`` is the tightest crop holding the whole mask.
    """
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        raise ValueError(f"mask must be a (H,W) or (1,H,W) tensor, got {mask!r:.60}")
    plane = (mask.reshape(mask.shape[-2:]) if mask.ndim == 3 else mask) != 0
    rows, cols = torch.nonzero(plane.any(dim=1)), torch.nonzero(plane.any(dim=0))
    if rows.numel() == 0:
        raise ValueError("mask is empty: it has no bounding box")
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


# ----------------------------------------------------------------------------- warps


def _to_hwc(image: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(image.detach().permute(1, 2, 0).cpu().numpy(), dtype=np.float32)


def _from_hwc(array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    if array.ndim == 2:  # OpenCV drops a single channel axis
        array = array[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).to(like.device)


def _checked_pair(image: torch.Tensor, mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    check_image(image)
    check_mask(mask, image)
    return _to_hwc(image), _to_hwc((mask > 0.5).float())


def _binary(mask: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return (_from_hwc(mask, like) >= 0.5).to(like.dtype)


def warp_patch(
    image: torch.Tensor,
    mask: torch.Tensor,
    angle: float,
    scale: float,
    flip_h: bool = False,
    flip_v: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip, then rotate by ``angle`` degrees (counter-clockwise) and scale about the centre.

    The output canvas grows (or shrinks) to hold the whole transformed patch, so no part
    of the defect is cut off; its size is ``ceil`` of the rotated, scaled extent.
    """
    source, source_mask = _checked_pair(image, mask)
    if not (math.isfinite(angle) and math.isfinite(scale)) or scale <= 0:
        raise ValueError(f"angle must be finite and scale positive, got {angle!r}, {scale!r}")
    if flip_h:
        source, source_mask = source[:, ::-1], source_mask[:, ::-1]
    if flip_v:
        source, source_mask = source[::-1], source_mask[::-1]
    height, width = source.shape[:2]
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), float(angle), scale)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    # Round away float noise first so that e.g. 90 degrees does not grow the canvas by one.
    out_w = max(1, math.ceil(round(height * sin + width * cos, 6)))
    out_h = max(1, math.ceil(round(height * cos + width * sin, 6)))
    matrix[0, 2] += (out_w - width) / 2
    matrix[1, 2] += (out_h - height) / 2
    size = (out_w, out_h)
    source, source_mask = np.ascontiguousarray(source), np.ascontiguousarray(source_mask)
    warped = cv2.warpAffine(
        source, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    warped_mask = cv2.warpAffine(
        source_mask, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
    return _from_hwc(warped, image).clamp_(0, 1), _binary(warped_mask, image)


def _remap(
    source: np.ndarray,
    source_mask: np.ndarray,
    map_x: np.ndarray,
    map_y: np.ndarray,
    like: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    warped = cv2.remap(
        source, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    warped_mask = cv2.remap(
        source_mask, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
    return _from_hwc(warped, like).clamp_(0, 1), _binary(warped_mask, like)


def elastic_distort(
    image: torch.Tensor, mask: torch.Tensor, alpha: float, sigma: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Elastic deformation (Simard et al. 2003), the same field for image and mask.

    Per-pixel uniform noise from ``seed`` is smoothed by a Gaussian of ``sigma`` pixels
    and rescaled so that the largest displacement is exactly ``alpha`` pixels (unlike
    albumentations, where the amplitude also shrinks as sigma grows).
    """
    source, source_mask = _checked_pair(image, mask)
    if not (alpha >= 0 and math.isfinite(alpha)) or not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"alpha must be >= 0 and sigma > 0, got alpha={alpha!r}, sigma={sigma!r}")
    height, width = source.shape[:2]
    generator = torch.Generator().manual_seed(int(seed))
    noise = (torch.rand((2, height, width), generator=generator) * 2 - 1).numpy()
    fields = []
    for component in noise:
        smooth = cv2.GaussianBlur(component, (0, 0), float(sigma), borderType=cv2.BORDER_REFLECT)
        peak = float(np.abs(smooth).max())
        fields.append(smooth * (alpha / peak) if peak > 0 else smooth)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return _remap(source, source_mask, xs + fields[0], ys + fields[1], image)


def optical_distort(
    image: torch.Tensor, mask: torch.Tensor, k: float, dx: float, dy: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Barrel (``k > 0``) or pincushion (``k < 0``) lens distortion, as albumentations'.

    The camera model of albumentations' ``OpticalDistortion``: focal lengths equal to the
    width and height, centre shifted by ``(dx, dy)`` pixels, radial coefficients
    ``k1 = k2 = k``; each output pixel samples the input at its distorted position.
    """
    source, source_mask = _checked_pair(image, mask)
    if not all(math.isfinite(v) for v in (k, dx, dy)):
        raise ValueError(f"k, dx and dy must be finite, got {k!r}, {dx!r}, {dy!r}")
    height, width = source.shape[:2]
    center_x, center_y = width * 0.5 + dx, height * 0.5 + dy
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    x, y = (xs - center_x) / width, (ys - center_y) / height
    radius2 = x * x + y * y
    factor = 1 + k * radius2 + k * radius2 * radius2
    map_x = (x * factor * width + center_x).astype(np.float32)
    map_y = (y * factor * height + center_y).astype(np.float32)
    return _remap(source, source_mask, map_x, map_y, image)


def color_jitter(
    image: torch.Tensor, brightness: float, contrast: float, saturation: float
) -> torch.Tensor:
    """Brightness, contrast, then saturation factors (1 keeps the image), as torchvision.

    Scaling, blending with the mean grey level and blending with the grey image, each
    clamped to [0, 1]; saturation leaves grayscale images alone.
    """
    check_image(image)
    return _torchvision_jitter(image, brightness, contrast, saturation, 0.0, (0, 1, 2, 3))
