"""Seen-anomaly extension (PRN, Zhang et al., CVPR 2023): real defects pasted onto normals.

The few anomalous training images of few-shot anomaly detection are reused: a real
defect is cut out along its mask, augmented (flips, rotation, scale, elastic or optical
distortion, colour jitter) and pasted onto a normal image, inside the object.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from anomgen.core import (
    AnomalyTransform,
    check_bool,
    check_int,
    check_keys,
    check_names,
    check_range,
    finite_number,
    random_int,
    random_uniform,
    register,
)
from anomgen.functional.blend import paste, poisson_blend
from anomgen.functional.geometry import (
    bbox,
    color_jitter,
    elastic_distort,
    foreground_mask,
    match_channels,
    optical_distort,
    warp_patch,
)
from anomgen.io import AnomalyPool, resize

__all__ = [
    "FOREGROUNDS",
    "POSITIONS",
    "RealAnomalyImage",
    "SeenAnomalyPaste",
    "anomaly_pool",
    "check_foreground",
    "sample_position",
]

FOREGROUNDS = ("none", "otsu", "threshold")
DISTORTIONS = ("elastic", "optical")
BLENDS = ("paste", "poisson")
POSITIONS = ("random", "source")
# Context kept around a cut defect, so that warps interpolate real pixels at its edge and
# Poisson blending can carry the defect's edge, which a tight mask leaves half outside.
_CUT_MARGIN = 2
# Poisson mode clones the defect mask grown by this many pixels (see SeenAnomalyPaste).
_POISSON_GROW = 2
_CACHE_SIZE = 512


def check_foreground(method: str, threshold: float | None) -> float | None:
    """Validate a ``foreground`` method name and its threshold (see ``foreground_mask``);
    return the threshold as a plain float (or None)."""
    if method not in FOREGROUNDS:
        raise ValueError(f"foreground must be one of {FOREGROUNDS}, got {method!r}")
    if method != "threshold":
        if threshold is not None:
            raise ValueError(
                f"foreground_threshold={threshold!r} only applies to foreground='threshold'"
            )
        return None
    if threshold is None:
        raise ValueError("foreground 'threshold' needs foreground_threshold in [0, 1], got None")
    return finite_number("foreground_threshold", threshold, 0.0, 1.0)


def sample_position(
    image: torch.Tensor,
    generator: torch.Generator,
    method: str = "none",
    threshold: float | None = None,
    invert: bool = False,
) -> list[int]:
    """A uniformly random ``[row, col]`` of ``image``'s foreground.

    ``method`` "none" (or a foreground that comes out empty, e.g. on a flat image) draws
    from the whole image.
    """
    height, width = image.shape[-2:]
    if method != "none":
        foreground = foreground_mask(image, method, threshold, invert)[0].flatten()
        candidates = torch.nonzero(foreground)[:, 0].cpu()
        if candidates.numel() > 0:
            index = int(candidates[random_int(generator, 0, candidates.numel() - 1)])
            return [index // width, index % width]
    return [random_int(generator, 0, height - 1), random_int(generator, 0, width - 1)]


@register
@dataclass
class SeenAnomalyPaste(AnomalyTransform):
    """A real defect from an ``AnomalyPool``, augmented and pasted onto the object.

    ``anomalies`` is a folder of anomalous images with a same-named ``.png`` mask beside
    each (MTD layout; ``masks`` None), a folder whose masks ``<name>_mask.png`` live in
    the folder ``masks`` (MVTec), a list of image files with ``masks`` a list of as many
    mask files, or an ``AnomalyPool``. The pool image is first resized
    to the normal image's size, so a defect keeps its size relative to the image; then
    its mask's bounding box is cut out (with the mask) and, image and mask together:

    * flipped horizontally and vertically, each with ``flip_probability``;
    * colour-jittered by factors from ``brightness``, ``contrast``, ``saturation`` (as
      torchvision's ``ColorJitter`` on the cut patch: contrast pivots on the patch's own
      mean grey level, so a dark defect keeps its place against its nearby ground);
    * rotated by an angle from ``rotation`` (degrees) and scaled by a factor from ``scale``;
    * with ``distortion_probability``, distorted by one kind from ``distortions``:
      "elastic" (peak displacement a fraction ``elastic_alpha`` of the patch's shorter
      side, smoothness ``elastic_sigma`` likewise) or "optical" (coefficient from
      ``optical_k``, centre shifted by a fraction ``optical_shift`` of the patch size).

    With ``position`` "random" the defect's centre lands on a random pixel of the image's
    foreground: ``foreground`` "none" (anywhere), "otsu" or "threshold" (with
    ``foreground_threshold``) as in ``foreground_mask``, ``foreground_invert`` for dark
    objects on bright backgrounds. Only method names are accepted, so the transform stays
    serialisable; an image whose foreground comes out empty falls back to anywhere. With
    ``position`` "source" the defect's centre stays where it was in its own image (scaled to
    the normal image's size), for aligned parts and tiles whose defects have typical places,
    e.g. the grinding bands at a magnetic tile's edge; a foreground is then an error.

    ``blend`` "paste" replaces the pixels under the defect mask. "poisson" clones the
    defect seamlessly (its gradients, the normal image's brightness) through a mask grown
    by 2 pixels: masks thresholded at half intensity leave half of a defect's edge outside,
    and without it a dark spot fades to a faint smudge. The returned mask is the placed
    defect mask, its whole footprint in paste mode (also where a defect pixel equals the
    background) and in poisson mode the grown mask where the image changed; every other
    pixel is untouched. OpenCV's blend also shifts the brightness a few grey levels in a thin band
    outside the mask; that band is put back, which can leave a faint edge. Grayscale
    defects on RGB images and the reverse are converted.
    """

    anomalies: str | Path | Sequence[str | Path] | AnomalyPool
    masks: str | Path | Sequence[str | Path] | None = None
    flip_probability: float = 0.5
    rotation: tuple[float, float] = (-90.0, 90.0)
    scale: tuple[float, float] = (0.5, 1.5)
    distortion_probability: float = 0.5
    distortions: tuple[str, ...] = DISTORTIONS
    elastic_alpha: tuple[float, float] = (0.02, 0.1)
    elastic_sigma: float = 0.1
    optical_k: tuple[float, float] = (-0.3, 0.3)
    optical_shift: tuple[float, float] = (-0.1, 0.1)
    brightness: tuple[float, float] = (0.8, 1.2)
    contrast: tuple[float, float] = (0.8, 1.2)
    saturation: tuple[float, float] = (0.8, 1.2)
    foreground: str = "none"
    foreground_threshold: float | None = None
    foreground_invert: bool = False
    blend: str = "paste"
    position: str = "random"
    _pool: AnomalyPool = field(init=False, repr=False, compare=False)
    _cuts: dict[tuple[int, int, int, int], tuple[torch.Tensor, torch.Tensor]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    param_keys = (
        "anomaly",
        "flip_h",
        "flip_v",
        "angle",
        "scale",
        "brightness",
        "contrast",
        "saturation",
        "distortion",
        "center",
    )

    def __post_init__(self) -> None:
        self._pool, self.anomalies, self.masks = anomaly_pool(self.anomalies, self.masks)
        self.flip_probability = finite_number("flip_probability", self.flip_probability, 0.0, 1.0)
        self.rotation = check_range("rotation", self.rotation, -360.0, 360.0)
        self.scale = check_range("scale", self.scale, 0.01, 100.0)
        self.distortion_probability = finite_number(
            "distortion_probability", self.distortion_probability, 0.0, 1.0
        )
        # Repeats are allowed: ("elastic", "elastic", "optical") draws elastic twice as often.
        self.distortions = check_names("distortions", self.distortions, DISTORTIONS, False)
        if self.distortion_probability > 0 and not self.distortions:
            raise ValueError("distortions must name a distortion when distortion_probability > 0")
        self.elastic_alpha = check_range("elastic_alpha", self.elastic_alpha, 0.0, 1.0)
        self.elastic_sigma = finite_number("elastic_sigma", self.elastic_sigma)
        if not 0.0 < self.elastic_sigma <= 1.0:
            raise ValueError(f"elastic_sigma must be in (0, 1], got {self.elastic_sigma!r}")
        self.optical_k = check_range("optical_k", self.optical_k, -1.0, 1.0)
        self.optical_shift = check_range("optical_shift", self.optical_shift, -0.5, 0.5)
        self.brightness = check_range("brightness", self.brightness, 0.0, 10.0)
        self.contrast = check_range("contrast", self.contrast, 0.0, 10.0)
        self.saturation = check_range("saturation", self.saturation, 0.0, 10.0)
        self.foreground_threshold = check_foreground(self.foreground, self.foreground_threshold)
        self.foreground_invert = check_bool("foreground_invert", self.foreground_invert)
        if self.blend not in BLENDS:
            raise ValueError(f"blend must be one of {BLENDS}, got {self.blend!r}")
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {self.position!r}")
        if self.position == "source" and self.foreground != "none":
            raise ValueError(
                f"foreground={self.foreground!r} only applies to position='random': a defect "
                "at its source position ignores the foreground"
            )

    # ------------------------------------------------------------------ sampling

    def sample_params(self, image: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        params: dict[str, Any] = {
            "anomaly": random_int(generator, 0, len(self._pool) - 1),
            "flip_h": random_uniform(generator, 0, 1) < self.flip_probability,
            "flip_v": random_uniform(generator, 0, 1) < self.flip_probability,
            "angle": random_uniform(generator, *self.rotation),
            "scale": random_uniform(generator, *self.scale),
            "brightness": random_uniform(generator, *self.brightness),
            "contrast": random_uniform(generator, *self.contrast),
            "saturation": random_uniform(generator, *self.saturation),
            "distortion": None,
        }
        if random_uniform(generator, 0, 1) < self.distortion_probability:
            kind = self.distortions[random_int(generator, 0, len(self.distortions) - 1)]
            if kind == "elastic":
                params["distortion"] = {
                    "kind": kind,
                    "alpha": random_uniform(generator, *self.elastic_alpha),
                    "sigma": float(self.elastic_sigma),
                    "seed": random_int(generator, 0, 2**31 - 1),
                }
            else:
                params["distortion"] = {
                    "kind": kind,
                    "k": random_uniform(generator, *self.optical_k),
                    "dx": random_uniform(generator, *self.optical_shift),
                    "dy": random_uniform(generator, *self.optical_shift),
                }
        if self.position == "source":
            params["center"] = self._source_center(params["anomaly"], tuple(image.shape[-2:]))
        else:
            params["center"] = sample_position(
                image, generator, self.foreground, self.foreground_threshold, self.foreground_invert
            )
        return params

    def _source_center(self, index: int, size: tuple[int, int]) -> list[int]:
        """``[row, col]`` of defect ``index``'s box centre in its own image resized to ``size``."""
        mask = self._pool.masks[index]
        top, left, bottom, right = bbox(mask)
        height, width = mask.shape[-2:]
        return [
            min(size[0] - 1, int((top + bottom) / 2 * size[0] / height)),
            min(size[1] - 1, int((left + right) / 2 * size[1] / width)),
        ]

    # ------------------------------------------------------------------ applying

    def check_params(self, params: Any) -> None:
        super().check_params(params)
        _check_pick(params, len(self._pool))
        distortion = params["distortion"]
        if distortion is not None:
            kind = check_keys("distortion", distortion, ("kind",))["kind"]
            if kind not in DISTORTIONS:
                raise ValueError(f"distortion kind must be one of {DISTORTIONS}, got {kind!r}")
            keys = ("alpha", "sigma", "seed") if kind == "elastic" else ("k", "dx", "dy")
            check_keys(f"{kind} distortion", distortion, keys)

    def defect_patch(
        self, params: dict[str, Any], size: tuple[int, int], channels: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The augmented defect for ``params`` on an image of ``size``: (C,h,w), (1,h,w).

        Cropped to the mask's bounding box plus a little context; the mask may be empty
        when a strong warp shrinks a tiny defect away.
        """
        patch, mask = self._cut(int(params["anomaly"]), size, channels)
        patch = color_jitter(patch, params["brightness"], params["contrast"], params["saturation"])
        patch, mask = warp_patch(
            patch, mask, params["angle"], params["scale"], params["flip_h"], params["flip_v"]
        )
        distortion = params["distortion"]
        if distortion is not None:
            short_side = min(patch.shape[-2:])
            if distortion["kind"] == "elastic":
                patch, mask = elastic_distort(
                    patch,
                    mask,
                    distortion["alpha"] * short_side,
                    max(1.0, distortion["sigma"] * short_side),
                    distortion["seed"],
                )
            else:
                patch_h, patch_w = patch.shape[-2:]
                patch, mask = optical_distort(
                    patch,
                    mask,
                    distortion["k"],
                    distortion["dx"] * patch_w,
                    distortion["dy"] * patch_h,
                )
        if not bool(mask.any()):
            return patch, mask
        rows, cols = _around(mask, _CUT_MARGIN)
        return patch[:, rows, cols], mask[:, rows, cols]

    def apply(
        self, image: torch.Tensor, params: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        channels, height, width = image.shape
        patch, mask = self.defect_patch(params, (height, width), channels)
        if not bool(mask.any()):
            return image.clone(), torch.zeros_like(image[:1])
        patch, mask = patch.to(image), mask.to(image)
        # Where the patch's top-left corner goes so that the defect's box centre is `center`.
        center_y, center_x = (int(v) for v in params["center"])
        box_top, box_left, box_bottom, box_right = bbox(mask)
        top = center_y - (box_bottom - box_top) // 2 - box_top
        left = center_x - (box_right - box_left) // 2 - box_left
        if self.blend == "paste":
            return paste(image, patch, mask, top, left)
        grown = F.max_pool2d(mask[None], 2 * _POISSON_GROW + 1, 1, _POISSON_GROW)[0]
        box_top, box_left, box_bottom, box_right = bbox(grown)
        grown_center = (
            top + box_top + (box_bottom - box_top) // 2,
            left + box_left + (box_right - box_left) // 2,
        )
        blended, changed = poisson_blend(image, patch, grown, grown_center)
        # The grown mask at its place: pasting ones onto zeros marks exactly those pixels.
        _, placed = paste(torch.zeros_like(image[:1]), torch.ones_like(grown), grown, top, left)
        keep = (changed * placed).bool()
        return torch.where(keep, blended, image), keep.to(image.dtype)

    def _cut(
        self, index: int, size: tuple[int, int], channels: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Defect ``index`` at the scale of a ``size`` image: its box plus a little context."""
        if not 0 <= index < len(self._pool):
            raise ValueError(f"anomaly index {index} is outside the pool of {len(self._pool)}")
        key = (index, size[0], size[1], channels)
        if key not in self._cuts:
            if len(self._cuts) >= _CACHE_SIZE:
                self._cuts.pop(next(iter(self._cuts)))
            image = match_channels(resize(self._pool.images[index], size), channels)
            mask = _resize_mask(self._pool.masks[index], size)
            rows, cols = _around(mask, _CUT_MARGIN)
            self._cuts[key] = (image[:, rows, cols].contiguous(), mask[:, rows, cols].contiguous())
        return self._cuts[key]


@register
@dataclass
class RealAnomalyImage(AnomalyTransform):
    """A real anomalous image itself, with its mask, in place of the normal image.

    Seen-anomaly extension cuts real defects out, so a model never sees the ground around a
    real defect labelled normal. Where defective parts differ from normal ones also away
    from their defects (MTD's tiles do), the few anomalous images themselves can teach a
    model to leave that ground alone. ``anomalies`` and ``masks`` are as in
    ``SeenAnomalyPaste``. The anomalous image is resized to the normal image's size (its
    channels converted) and flipped horizontally and vertically, each with
    ``flip_probability``; the normal image only gives the size, so pixels outside the mask
    change too (``preserves_outside`` is False).
    """

    preserves_outside = False

    anomalies: str | Path | Sequence[str | Path] | AnomalyPool
    masks: str | Path | Sequence[str | Path] | None = None
    flip_probability: float = 0.5
    _pool: AnomalyPool = field(init=False, repr=False, compare=False)
    param_keys = ("anomaly", "flip_h", "flip_v")

    def __post_init__(self) -> None:
        self._pool, self.anomalies, self.masks = anomaly_pool(self.anomalies, self.masks)
        self.flip_probability = finite_number("flip_probability", self.flip_probability, 0.0, 1.0)

    def sample_params(self, image: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        return {
            "anomaly": random_int(generator, 0, len(self._pool) - 1),
            "flip_h": random_uniform(generator, 0, 1) < self.flip_probability,
            "flip_v": random_uniform(generator, 0, 1) < self.flip_probability,
        }

    def check_params(self, params: Any) -> None:
        super().check_params(params)
        _check_pick(params, len(self._pool))

    def apply(
        self, image: torch.Tensor, params: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        index = params["anomaly"]
        if not 0 <= index < len(self._pool):  # apply called without check_params
            raise ValueError(f"anomaly index {index} is outside the pool of {len(self._pool)}")
        size = tuple(image.shape[-2:])
        real = match_channels(resize(self._pool.images[index], size), image.shape[0])
        mask = _resize_mask(self._pool.masks[index], size)
        flips = [dim for dim, flip in ((-1, params["flip_h"]), (-2, params["flip_v"])) if flip]
        if flips:
            real, mask = real.flip(flips), mask.flip(flips)
        return real.to(image), mask.to(image)


def anomaly_pool(anomalies: Any, masks: Any) -> tuple[AnomalyPool, Any, Any]:
    """The pool behind a transform's ``anomalies``/``masks`` arguments, and those arguments
    in serialisable form (folders and file lists as strings; a pool is kept as given)."""
    if isinstance(anomalies, AnomalyPool):
        if masks is not None:
            raise ValueError("masks only applies to a folder of anomalies, not to a pool")
        return anomalies, anomalies, None
    if isinstance(anomalies, dict):  # a pool as serialised by AnomalyPool.to_dict
        if set(anomalies) - {"images", "masks"} or "images" not in anomalies:
            raise ValueError(f"anomalies dict needs 'images' (and 'masks'), got {anomalies!r}")
        if masks is not None and anomalies.get("masks") not in (None, masks):
            raise ValueError(f"conflicting masks {anomalies['masks']!r} and {masks!r}")
        anomalies, masks = anomalies["images"], anomalies.get("masks") or masks
    if isinstance(anomalies, str | Path):
        if masks is not None and not isinstance(masks, str | Path):
            raise ValueError(f"masks must be a folder or None, got {masks!r:.80}")
        pool = AnomalyPool(anomalies, masks)
        return pool, str(anomalies), None if masks is None else str(masks)
    if _is_file_list(anomalies) and _is_file_list(masks):
        pool = AnomalyPool(anomalies, masks)
        return pool, [str(p) for p in anomalies], [str(p) for p in masks]
    raise ValueError(
        "anomalies must be a folder (masks: a folder or None), a list of image files "
        f"(masks: a list of as many mask files) or an AnomalyPool; got {anomalies!r:.80}"
    )


def _is_file_list(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) > 0
        and all(isinstance(v, str | Path) for v in value)
    )


def _around(mask: torch.Tensor, margin: int) -> tuple[slice, slice]:
    """Row and column slices of ``mask``'s bounding box grown by ``margin`` (clipped)."""
    top, left, bottom, right = bbox(mask)
    height, width = mask.shape[-2:]
    return (
        slice(max(0, top - margin), min(height, bottom + margin)),
        slice(max(0, left - margin), min(width, right + margin)),
    )


def _check_pick(params: dict[str, Any], pool_size: int) -> None:
    """The defect index and flips of hand-edited ``params``: an index into the pool (not a
    float or a string that ``int`` would truncate or parse), and real bools."""
    check_int("anomaly index", params["anomaly"], 0, pool_size - 1)
    check_bool("flip_h", params["flip_h"])
    check_bool("flip_v", params["flip_v"])


def _resize_mask(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Binary mask at ``size``: area-weighted coverage >= 0.5.

    A defect thinner than a pixel after shrinking would vanish at 0.5, so then its most
    covered pixels are kept: the pool never loses a defect to resizing.
    """
    if tuple(mask.shape[-2:]) == tuple(size):
        return (mask > 0.5).float()
    coverage = F.interpolate(mask[None].float(), size=tuple(size), mode="area")[0]
    binary = coverage >= 0.5
    if not bool(binary.any()):
        binary = coverage >= coverage.max() * 0.5
    return binary.float()
