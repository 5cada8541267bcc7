"""CutPaste and CutPaste-Scar (Li et al., CVPR 2021) with every choice made explicit.

A patch is cut from the image, colour-jittered and pasted elsewhere in the same image,
so the anomaly is a local break of the texture's continuity rather than a foreign
texture. Boxes are ``(top, left, height, width)`` in pixels. The returned mask marks the
pasted pixels that actually changed, so every pixel outside it is bit-identical to the
input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from kornia.color import hsv_to_rgb, rgb_to_hsv

__all__ = ["Box", "JITTER_ORDER", "color_jitter", "cut_paste", "cut_paste_scar", "strip_extent"]

Box = tuple[int, int, int, int]
# torchvision's ColorJitter applies its four adjustments in a random order; indices below.
JITTER_ORDER = ("brightness", "contrast", "saturation", "hue")
# ITU-R 601 luma, as torchvision's rgb_to_grayscale.
_LUMA = (0.2989, 0.587, 0.114)


def _check_image(image: Any) -> None:
    """The shared check (shape, channels, dtype, range, NaN); imported here because
    ``geometry`` imports this module."""
    from anomgen.functional.geometry import check_image

    check_image(image)


def _grayscale(image: torch.Tensor) -> torch.Tensor:
    if image.shape[-3] == 1:
        return image
    weights = image.new_tensor(_LUMA).view(3, 1, 1)
    return (image * weights).sum(dim=-3, keepdim=True)


def color_jitter(
    image: torch.Tensor,
    brightness: float = 1.0,
    contrast: float = 1.0,
    saturation: float = 1.0,
    hue: float = 0.0,
    order: Sequence[int] = (0, 1, 2, 3),
) -> torch.Tensor:
    """torchvision ``ColorJitter`` semantics with the drawn factors given explicitly.

    ``brightness``/``contrast``/``saturation`` are multiplicative factors (1 keeps the
    image): scaling, blending with the mean grey level, blending with the grey image.
    ``hue`` shifts the hue by that fraction of a full turn (in [-0.5, 0.5]). ``order``
    lists the adjustments by index into ``JITTER_ORDER``. Saturation and hue only act on
    RGB images. Results are clamped to [0, 1], as torchvision does.
    """
    if sorted(int(i) for i in order) != [0, 1, 2, 3]:
        raise ValueError(f"order must be a permutation of 0..3, got {order!r}")
    if not all(math.isfinite(v) and v >= 0 for v in (brightness, contrast, saturation)):
        raise ValueError(
            f"jitter factors must be finite and >= 0, got brightness={brightness}, "
            f"contrast={contrast}, saturation={saturation}"
        )
    if not -0.5 <= hue <= 0.5:  # NaN fails it too
        raise ValueError(f"hue must be in [-0.5, 0.5], got {hue!r}")
    rgb = image.shape[-3] == 3
    for index in order:
        adjustment = JITTER_ORDER[int(index)]
        if adjustment == "brightness" and brightness != 1.0:
            image = (image * brightness).clamp(0, 1)
        elif adjustment == "contrast" and contrast != 1.0:
            mean = _grayscale(image).mean(dim=(-3, -2, -1), keepdim=True)
            image = (contrast * image + (1 - contrast) * mean).clamp(0, 1)
        elif adjustment == "saturation" and saturation != 1.0 and rgb:
            image = (saturation * image + (1 - saturation) * _grayscale(image)).clamp(0, 1)
        elif adjustment == "hue" and hue != 0.0 and rgb:
            hsv = rgb_to_hsv(image)
            shifted = torch.remainder(hsv[..., :1, :, :] + hue * 2 * math.pi, 2 * math.pi)
            image = hsv_to_rgb(torch.cat([shifted, hsv[..., 1:, :, :]], dim=-3)).clamp(0, 1)
    return image


def check_box(name: str, box: Sequence[int], height: int, width: int) -> Box:
    """``box`` = (top, left, height, width) as ints, checked to lie inside the image."""
    try:
        top, left, box_h, box_w = (int(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (top, left, height, width), got {box!r}") from None
    if (
        box_h < 1
        or box_w < 1
        or top < 0
        or left < 0
        or top + box_h > height
        or left + box_w > width
    ):
        raise ValueError(f"{name} {tuple(box)!r} does not fit inside a {height}x{width} image")
    return top, left, box_h, box_w


def _jittered(patch: torch.Tensor, jitter: dict[str, Any] | None) -> torch.Tensor:
    return patch if jitter is None else color_jitter(patch, **jitter)


def cut_paste(
    image: torch.Tensor,
    box_src: Sequence[int],
    box_dst: Sequence[int],
    jitter: dict[str, Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste the ``box_src`` patch, jittered by ``color_jitter(**jitter)``, over ``box_dst``.

    Both boxes are ``(top, left, height, width)`` of the same size inside the (C,H,W)
    image. Returns the new image and a (1,H,W) mask of the pasted pixels that changed.
    """
    _check_image(image)
    height, width = image.shape[-2:]
    top, left, box_h, box_w = check_box("box_src", box_src, height, width)
    dst_top, dst_left, dst_h, dst_w = check_box("box_dst", box_dst, height, width)
    if (dst_h, dst_w) != (box_h, box_w):
        raise ValueError(
            f"box_dst {tuple(box_dst)!r} must have the size of box_src {tuple(box_src)!r}"
        )
    patch = _jittered(image[:, top : top + box_h, left : left + box_w], jitter)
    out = image.clone()
    out[:, dst_top : dst_top + box_h, dst_left : dst_left + box_w] = patch
    mask = (out != image).any(dim=0, keepdim=True).to(image.dtype)
    return out, mask


def strip_extent(length: float, width: float, angle_deg: float) -> tuple[float, float]:
    """Half height and half width of the bounding box of a strip rotated by ``angle_deg``."""
    cos, sin = abs(math.cos(math.radians(angle_deg))), abs(math.sin(math.radians(angle_deg)))
    return (width * sin + length * cos) / 2, (width * cos + length * sin) / 2


def cut_paste_scar(
    image: torch.Tensor,
    box_src: Sequence[int],
    center_dst: Sequence[float],
    angle: float,
    jitter: dict[str, Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste the ``box_src`` strip, jittered and rotated by ``angle`` degrees, at ``center_dst``.

    The strip's length runs along the box height. ``angle`` turns it counter-clockwise as
    displayed (PIL's ``rotate``), ``center_dst`` = (y, x) in pixel coordinates (pixel
    ``i`` covers [i, i+1)). Each covered pixel takes the strip pixel under its centre
    (nearest neighbour, so the footprint is binary); parts that fall outside the image are
    dropped. Returns the new image and a (1,H,W) mask of footprint pixels that changed.
    """
    _check_image(image)
    height, width = image.shape[-2:]
    top, left, length, strip_w = check_box("box_src", box_src, height, width)
    try:
        center_y, center_x = (float(v) for v in center_dst)
    except (TypeError, ValueError):
        raise ValueError(f"center_dst must be (y, x), got {center_dst!r}") from None
    if not (math.isfinite(center_y) and math.isfinite(center_x) and math.isfinite(angle)):
        raise ValueError(f"center_dst {center_dst!r} and angle {angle!r} must be finite")
    strip = _jittered(image[:, top : top + length, left : left + strip_w], jitter)

    extent_y, extent_x = strip_extent(length, strip_w, angle)
    y0, y1 = max(0, math.floor(center_y - extent_y)), min(height, math.ceil(center_y + extent_y))
    x0, x1 = max(0, math.floor(center_x - extent_x)), min(width, math.ceil(center_x + extent_x))
    out = image.clone()
    mask = torch.zeros((1, height, width), dtype=image.dtype, device=image.device)
    if y0 >= y1 or x0 >= x1:
        return out, mask
    # Inverse-rotate each pixel centre of the bounding box into the strip's own frame.
    dy = torch.arange(y0, y1, dtype=torch.float64).view(-1, 1) + 0.5 - center_y
    dx = torch.arange(x0, x1, dtype=torch.float64).view(1, -1) + 0.5 - center_x
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    across = dx * cos - dy * sin + strip_w / 2
    along = dx * sin + dy * cos + length / 2
    inside = (across >= 0) & (across < strip_w) & (along >= 0) & (along < length)
    rows = along.floor().long().clamp(0, length - 1).to(image.device)
    cols = across.floor().long().clamp(0, strip_w - 1).to(image.device)
    inside = inside.to(image.device)
    out[:, y0:y1, x0:x1] = torch.where(inside, strip[:, rows, cols], out[:, y0:y1, x0:x1])
    changed = (out[:, y0:y1, x0:x1] != image[:, y0:y1, x0:x1]).any(dim=0) & inside
    mask[0, y0:y1, x0:x1] = changed.to(image.dtype)
    return out, mask
