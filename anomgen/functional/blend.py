"""Putting a patch into an image: alpha paste and Poisson (seamless) blending.

Both return ``(image, mask)`` with a (1,H,W) mask, and copy every pixel outside that mask
back from the target, so it stays bit-identical to the input. ``paste`` marks the patch's
whole footprint; ``poisson_blend`` marks the pixels that changed by more than
``MIN_CHANGE`` in some channel. Positions are (row, column).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from anomgen.functional.geometry import bbox, check_image, match_channels

__all__ = ["MIN_CHANGE", "paste", "poisson_blend"]

# One grey level: smaller differences are rounding noise of an 8-bit round trip.
MIN_CHANGE = 1.0 / 255.0


def _check_patch(patch: torch.Tensor, patch_mask: torch.Tensor) -> None:
    check_image(patch, "patch")
    if not isinstance(patch_mask, torch.Tensor) or patch_mask.ndim != 3:
        raise ValueError(f"patch mask must be a (1,h,w) tensor, got {patch_mask!r:.60}")
    if patch_mask.shape[0] != 1 or patch_mask.shape[1:] != patch.shape[1:]:
        raise ValueError(
            f"patch mask has shape {tuple(patch_mask.shape)}, patch {tuple(patch.shape)}"
        )


def paste(
    target: torch.Tensor,
    patch: torch.Tensor,
    patch_mask: torch.Tensor,
    top: int,
    left: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Alpha-paste ``patch`` with its top-left corner at (``top``, ``left``) of ``target``.

    ``patch_mask`` (1,h,w) in [0, 1] is the opacity (1 replaces, 0 keeps); the returned
    mask is its footprint (opacity > 0) at the pasted place. The patch may
    hang over any border, or miss the image entirely; the part outside is dropped. A
    grayscale patch on an RGB target (or the reverse) is converted to the target's
    channels first.
    """
    check_image(target, "target")
    _check_patch(patch, patch_mask)
    if not bool(((patch_mask >= 0) & (patch_mask <= 1)).all()):  # NaN fails it too
        raise ValueError("patch mask must hold opacities in [0, 1]")
    height, width = target.shape[-2:]
    patch_h, patch_w = patch.shape[-2:]
    top, left = int(top), int(left)
    y0, y1 = max(top, 0), min(top + patch_h, height)
    x0, x1 = max(left, 0), min(left + patch_w, width)
    out, mask = target.clone(), torch.zeros_like(target[:1])
    if y0 >= y1 or x0 >= x1:
        return out, mask
    window = (slice(None), slice(y0, y1), slice(x0, x1))
    crop = (slice(None), slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
    source = match_channels(patch, target.shape[0])[crop].to(target)
    alpha = patch_mask[crop].to(target)
    before = target[window]
    out[window] = before + alpha * (source - before)
    # The whole footprint is the defect, also where a defect pixel equals the background:
    # holes in a label would teach a segmentation model that parts of a defect are normal.
    mask[window] = (alpha > 0).to(target)
    return out, mask


def _to_uint8_rgb(image: torch.Tensor) -> np.ndarray:
    array = (image.detach() * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray(np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array)


# OpenCV erodes the clone mask by this many pixels before using the source's gradients.
_CV_ERODE = 3
# Margin around the mask: the grown mask plus the fixed one-pixel boundary ring.
_MARGIN = _CV_ERODE + 1
_GROW_KERNEL = np.ones((3, 3), np.uint8)


def poisson_blend(
    target: torch.Tensor,
    source: torch.Tensor,
    source_mask: torch.Tensor,
    center: Sequence[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seamlessly clone the masked part of ``source`` into ``target`` (Perez et al. 2003).

    OpenCV's ``seamlessClone`` (NORMAL_CLONE) on 8-bit copies. ``center`` = (row, col) in
    ``target`` where the centre of the mask's bounding box lands (a box of height h starts
    at row ``center[0] - h // 2``). Grayscale images are cloned as three equal channels; a
    source with other channels than the target is converted first. Mask pixels that fall
    outside the target are dropped.

    Three OpenCV quirks are handled here: it erodes the mask by 3 pixels (so the mask is
    grown by 3 first and every masked pixel takes the source's gradients), it keeps the
    outer ring of the mask's box fixed and fails when that box leaves the image (so the
    target is cloned inside a window padded by replicating its border, which lets masked
    pixels on the image border change too), and it overwrites the mask it is given.
    Pixels just outside the mask may change a little as well; the returned mask includes
    every pixel that changed by more than ``MIN_CHANGE``.
    """
    check_image(target, "target")
    _check_patch(source, source_mask)
    try:
        center_y, center_x = (int(v) for v in center)
    except (TypeError, ValueError):
        raise ValueError(f"center must be (row, col) integers, got {center!r}") from None
    height, width = target.shape[-2:]
    out, changed = target.clone(), torch.zeros_like(target[:1])
    selected = source_mask[0] > 0.5
    if not bool(selected.any()):
        return out, changed
    top, left, bottom, right = bbox(selected)
    # Shift from source to target coordinates, then keep the mask pixels inside the target.
    shift_y, shift_x = center_y - (bottom - top) // 2 - top, center_x - (right - left) // 2 - left
    inside = selected.clone()
    inside[: max(0, -shift_y)] = False
    inside[max(0, height - shift_y) :] = False
    inside[:, : max(0, -shift_x)] = False
    inside[:, max(0, width - shift_x) :] = False
    if not bool(inside.any()):
        return out, changed
    top, left, bottom, right = bbox(inside)
    margin = _MARGIN
    mask = np.pad(inside[top:bottom, left:right].cpu().numpy().astype(np.uint8) * 255, margin)
    clone_mask = cv2.dilate(mask, _GROW_KERNEL, iterations=_CV_ERODE)
    patch = np.pad(
        _to_uint8_rgb(match_channels(source, target.shape[0])),
        ((margin, margin), (margin, margin), (0, 0)),
        mode="edge",
    )[top : bottom + 2 * margin, left : right + 2 * margin]
    # The target window under the patch, padded by replication where it leaves the image.
    y0, y1 = top + shift_y - margin, bottom + shift_y + margin
    x0, x1 = left + shift_x - margin, right + shift_x + margin
    clip_y0, clip_y1, clip_x0, clip_x1 = max(y0, 0), min(y1, height), max(x0, 0), min(x1, width)
    window = (slice(None), slice(clip_y0, clip_y1), slice(clip_x0, clip_x1))
    destination = cv2.copyMakeBorder(
        _to_uint8_rgb(target[window]),
        clip_y0 - y0,
        y1 - clip_y1,
        clip_x0 - x0,
        x1 - clip_x1,
        cv2.BORDER_REPLICATE,
    )
    box_h, box_w = y1 - y0 - 2, x1 - x0 - 2  # the grown mask's box: all but the outer ring
    anchor = (1 + box_w // 2, 1 + box_h // 2)  # OpenCV wants (x, y)
    cloned = cv2.seamlessClone(patch, destination, clone_mask, anchor, cv2.NORMAL_CLONE)
    channels = target.shape[0]
    crop = (slice(clip_y0 - y0, clip_y1 - y0), slice(clip_x0 - x0, clip_x1 - x0))
    cloned, before = cloned[crop][:, :, :channels], destination[crop][:, :, :channels]
    # Compare in 8 bits: the clone's own rounding must not count as a change.
    moved = np.abs(cloned.astype(np.int16) - before).max(axis=2) > 1
    region = torch.from_numpy(moved)[None].to(target.device)
    candidate = torch.from_numpy(np.ascontiguousarray(cloned)).permute(2, 0, 1).to(target) / 255.0
    out[window] = torch.where(region, candidate, target[window])
    changed[window] = region.to(target.dtype)
    return out, changed
