"""Reading images and masks, and the pools that strategies draw from.

Pools decode their images once and keep them in memory, so the per-sample cost of
synthesis is pure tensor work (the texture pool also caches the resized copies it has
drawn, so images of many sizes cost one texture resize each).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from anomgen.core import check_int

__all__ = [
    "IMAGE_SUFFIXES",
    "AnomalyPool",
    "TexturePool",
    "check_channels",
    "check_texture",
    "list_images",
    "read_image",
    "read_mask",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# MTD and MVTec masks are anti-aliased 8-bit images: a pixel is defective from 128 up.
MASK_THRESHOLD = 128


def list_images(
    directory: str | Path, exclude_suffix: str | None = None, *, keep_non_files: bool = False
) -> list[Path]:
    """Image files in ``directory`` (not recursive), sorted; errors when there are none.

    A ``.png`` sharing its name with another image beside it is that image's mask (the
    raw MTD layout keeps ``name.jpg`` and its mask ``name.png`` together) and is skipped.

    An entry with an image suffix that is not a readable file (a broken link, a folder
    named ``x.png``) is an error naming it, as in ``TexturePool``: dropping it silently
    would train or preview on fewer images than the folder shows. ``keep_non_files=True``
    leaves such entries out instead, for a caller that reports them itself (prn-predict).
    """
    directory = _folder(directory, "image folder")
    candidates = []
    for p in directory.iterdir():
        if p.suffix.lower() not in IMAGE_SUFFIXES or (
            exclude_suffix and p.stem.endswith(exclude_suffix)
        ):
            continue
        if p.is_file():
            candidates.append(p)
        elif not keep_non_files:
            raise ValueError(
                f"image folder entry {str(p)!r} is {_non_file_kind(p)}, not an image file"
            )
    files = sorted(_without_masks(candidates))
    if not files:
        raise FileNotFoundError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {str(directory)!r}"
        )
    return files


def _without_masks(paths: Sequence[Path]) -> list[Path]:
    """``paths`` less each ``.png`` that shares its folder and name with another image: the
    raw MTD layout keeps every image's mask beside it under the same name."""
    others = {(p.parent, p.stem) for p in paths if p.suffix.lower() != ".png"}
    return [p for p in paths if not (p.suffix.lower() == ".png" and (p.parent, p.stem) in others)]


def _non_file_kind(path: Path) -> str:
    """What ``path``, which is not a regular file, is instead: for error messages."""
    if path.is_dir():
        return "a folder"
    if path.is_symlink() and not path.exists():
        return "a broken link"
    return "not a regular file"


def _folder(path: str | Path, what: str) -> Path:
    """``path`` as a Path, or a FileNotFoundError saying whether it is missing or a file."""
    path = Path(path)
    if not path.is_dir():
        problem = "is not a folder" if path.exists() else "does not exist"
        raise FileNotFoundError(f"{what} {str(path)!r} {problem}")
    return path


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"cannot read image {str(path)!r}: {error}") from None


# Grey modes PIL cannot turn into 8-bit "L" without clipping: read their values directly.
_HIGH_DEPTH_SCALE = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0}
_HIGH_DEPTH_SCALE["I"] = 65535.0  # 16-bit PNGs open as 32-bit "I" in some Pillow versions
_HIGH_DEPTH_SCALE["F"] = 1.0  # float TIFFs: taken as already in [0, 1]


def _grey_values(image: Image.Image, path: Path) -> np.ndarray:
    """A 16-bit, 32-bit or float grey image as float32 (H,W) in [0, 1], checked.

    ``convert("L")`` would clip such images at 255 (a 16-bit tile comes out nearly white),
    so their values are scaled by the mode's full range instead.
    """
    scale = _HIGH_DEPTH_SCALE[image.mode]
    values = np.asarray(image, dtype=np.float32) / scale
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if not (np.isfinite(low) and np.isfinite(high) and low >= 0.0 and high <= 1.0):
        raise ValueError(
            f"image {str(path)!r} (mode {image.mode!r}) holds values outside the mode's range "
            f"[0, {scale:g}]: [{low * scale:g}, {high * scale:g}]"
        )
    return values


def _float_array(path: Path, channels: int | None) -> np.ndarray:
    """The file as float32 (H,W,C) in [0, 1], C = ``channels`` or as stored (1 or 3)."""
    image = _open(path)
    if image.mode in _HIGH_DEPTH_SCALE:
        grey = _grey_values(image, path)[:, :, None]
        return np.repeat(grey, 3, axis=2) if channels == 3 else grey
    if channels is None:
        channels = 1 if image.mode in ("L", "1", "LA") else 3
    array = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.float32)
    if array.ndim == 2:
        array = array[:, :, None]
    return array / 255.0


def check_channels(channels: Any) -> int | None:
    """``channels`` as None, 1 or 3 (numpy integers too; True or 3.0 are errors)."""
    if channels is not None and check_int("channels", channels, 1, 3) == 2:
        raise ValueError(f"channels must be None, 1 or 3, got {channels!r}")
    return None if channels is None else int(channels)


def read_image(path: str | Path, channels: int | None = None) -> torch.Tensor:
    """A float (C,H,W) tensor in [0, 1]; ``channels`` 1 or 3 forces grayscale or RGB.

    With ``channels=None`` grayscale files (8-bit, 16-bit or float) stay 1-channel and
    everything else becomes RGB. 16-bit files keep their full precision.
    """
    array = _float_array(Path(path), check_channels(channels))
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous()


def read_mask(path: str | Path) -> torch.Tensor:
    """A binary float (1,H,W) mask: pixels from 128/255 of the file's grey range up (128 for
    8-bit masks, which MTD and MVTec anti-alias; 32,896 for 16-bit ones) are defective."""
    array = _float_array(Path(path), channels=1)[:, :, 0]
    # 1e-6 below the threshold so float rounding never drops a pixel exactly on it; the
    # next value down is 1.5e-5 away even at 16 bits.
    return torch.from_numpy(array >= MASK_THRESHOLD / 255.0 - 1e-6).float()[None]


def resize(image: torch.Tensor, size: tuple[int, int], nearest: bool = False) -> torch.Tensor:
    """Resize (C,H,W) to ``size`` = (H, W); masks use nearest so they stay binary."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    if nearest:
        return F.interpolate(image[None], size=size, mode="nearest")[0]
    # Antialiased resampling can overshoot [0, 1] by float error; downstream ops
    # (gamma's log, say) need the range kept.
    resized = F.interpolate(
        image[None], size=size, mode="bilinear", align_corners=False, antialias=True
    )[0]
    return resized.clamp_(0.0, 1.0)


def _match_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    if image.shape[0] == channels:
        return image
    if channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114], device=image.device).view(3, 1, 1)
        return (image * weights).sum(0, keepdim=True)
    return image.expand(3, -1, -1)


def texture_pool(value: str | Path | TexturePool | None, name: str) -> TexturePool | None:
    """The pool behind a transform's ``name`` argument: None (the image itself), a pool or
    a folder, which is read once here."""
    if value is None or isinstance(value, TexturePool):
        return value
    if isinstance(value, str | Path):
        return TexturePool(value)
    raise ValueError(f"{name} must be a folder, a TexturePool or None, got {value!r:.80}")


def check_texture(index: Any, pool: TexturePool | None, name: str = "texture") -> int:
    """A logged texture (or source) index: one into ``pool``, or -1 for the image itself."""
    return check_int(name, index, -1, -1 if pool is None else len(pool) - 1)


class TexturePool:
    """Anomaly-source textures (DTD in DRAEM), decoded once and kept in memory.

    ``source`` is a folder (searched recursively, as DTD keeps one folder per class; a
    ``.png`` beside a same-named image is its mask, as in ``list_images``, and skipped) or
    a list of (C,H,W) float tensors. Textures are stored as uint8 (a quarter of float32:
    DTD's 1,200 textures take about 0.3 GB, their resized copies at 256 px 0.24 GB) and
    turned into floats only when drawn.
    """

    def __init__(self, source: str | Path | Sequence[torch.Tensor]) -> None:
        if isinstance(source, str | Path):
            root = _folder(source, "texture folder")
            files = sorted(
                _without_masks([p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES])
            )
            if not files:
                raise FileNotFoundError(f"no texture images in {str(root)!r}")
            self.root: str | None = str(root)
            textures = [read_image(f, channels=3) for f in files]
        else:
            self.root = None
            textures = [_checked_tensor(t, f"texture {i}") for i, t in enumerate(source)]
            if not textures:
                raise ValueError("a texture pool needs at least one texture")
        self.textures = [_to_uint8(t) for t in textures]
        # Resized copies, made when first drawn and evicted least recently used first: as many
        # as four full sizes' worth, so images of varying sizes cost one resize per draw.
        self._resized: OrderedDict[tuple[int, int, int, str], torch.Tensor] = OrderedDict()
        self._max_resized = 4 * len(self.textures)

    def __len__(self) -> int:
        return len(self.textures)

    def get(
        self, index: int, size: tuple[int, int], channels: int, device: torch.device
    ) -> torch.Tensor:
        """Texture ``index`` as float (C,H,W) at ``size``; resized copies are cached."""
        key = (index, size[0], size[1], str(device))
        resized = self._resized.get(key)
        if resized is None:
            source = self.textures[index].float() / 255.0
            resized = _to_uint8(resize(source, size)).to(device)
            self._resized[key] = resized
            if len(self._resized) > self._max_resized:
                self._resized.popitem(last=False)
        else:
            self._resized.move_to_end(key)
        return _match_channels(resized.float().mul_(1.0 / 255.0), channels)

    def to_dict(self) -> str:
        if self.root is None:
            raise ValueError(
                "an in-memory texture pool cannot be serialised; build it from a folder"
            )
        return self.root


class AnomalyPool:
    """Real anomalous images with their masks, for seen-anomaly extension.

    Built from a folder with a same-named ``.png`` mask beside each image (MTD layout),
    a separate ``masks`` folder holding ``<name>_mask.png`` or ``<name>.png`` (MVTec),
    two lists of file paths (image i with mask i: a few-shot draw across folders), or
    lists of tensors. Empty masks are rejected: they would paste nothing.
    """

    def __init__(
        self,
        images: str | Path | Sequence[str | Path] | Sequence[torch.Tensor],
        masks: str | Path | Sequence[str | Path] | Sequence[torch.Tensor] | None = None,
    ) -> None:
        self.source: dict[str, Any] | None = None
        if isinstance(images, str | Path):
            self.source = {"images": str(images), "masks": None if masks is None else str(masks)}
            pairs = _find_anomaly_files(Path(images), None if masks is None else Path(masks))
        elif images and all(isinstance(i, str | Path) for i in images):
            if masks is None or isinstance(masks, str | Path) or len(masks) != len(images):
                raise ValueError("a list of anomaly image files needs a list of as many masks")
            pairs = [(Path(i), Path(m)) for i, m in zip(images, masks)]
            self.source = {
                "images": [str(p) for p, _ in pairs],
                "masks": [str(m) for _, m in pairs],
            }
        else:
            pairs = None
        if pairs is not None:
            self.names = [p.name for p, _ in pairs]
            self.images = [read_image(p) for p, _ in pairs]
            self.masks = [read_mask(m) for _, m in pairs]
        else:
            if masks is None or isinstance(masks, str | Path) or len(masks) != len(images):
                raise ValueError("in-memory anomaly pools need one mask tensor per image")
            self.names = [f"anomaly_{i}" for i in range(len(images))]
            self.images = [_checked_tensor(t, f"anomaly image {i}") for i, t in enumerate(images)]
            for i, mask in enumerate(masks):
                if not isinstance(mask, torch.Tensor):
                    raise ValueError(
                        f"mask {i} must be a (1,H,W) tensor, got {type(mask).__name__}"
                    )
            self.masks = [(m > 0.5).float() for m in masks]
        if not self.images:
            raise ValueError("an anomaly pool needs at least one anomalous image")
        for name, image, mask in zip(self.names, self.images, self.masks):
            if mask.ndim != 3 or mask.shape[0] != 1 or mask.shape[1:] != image.shape[1:]:
                raise ValueError(
                    f"mask of {name!r} has shape {tuple(mask.shape)}, image {tuple(image.shape)}"
                )
            if not bool(mask.any()):
                raise ValueError(
                    f"mask of {name!r} is empty: it marks no defect, so the image is not an "
                    "anomaly example (leave it out of the pool)"
                )

    def __len__(self) -> int:
        return len(self.images)

    def to_dict(self) -> dict[str, Any]:
        """``{"images": ..., "masks": ...}``: the arguments that rebuild this pool."""
        if self.source is None:
            raise ValueError("an in-memory anomaly pool cannot be serialised; build it from files")
        return dict(self.source)


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
    return (image * 255.0).round_().to(torch.uint8).contiguous()


def _checked_tensor(tensor: Any, what: str) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3 or tensor.shape[0] not in (1, 3):
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise ValueError(f"{what} must be a (C,H,W) tensor with C in {{1,3}}, got {shape}")
    if tensor.numel() == 0:
        raise ValueError(f"{what} is empty: {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise ValueError(f"{what} must be float with finite values in [0, 1], got {tensor.dtype}")
    low, high = torch.aminmax(tensor.detach())
    if not (bool(low >= 0) and bool(high <= 1)):  # NaN fails both tests
        raise ValueError(
            f"{what} must be float with finite values in [0, 1], "
            f"got values in [{float(low):.4g}, {float(high):.4g}]"
        )
    return tensor.float()


def _find_anomaly_files(images: Path, masks: Path | None) -> list[tuple[Path, Path]]:
    """Pair each anomalous image with its mask, failing on the first image without one."""
    if masks is not None:
        _folder(masks, "mask folder")
    files = list_images(images, exclude_suffix="_mask")
    pairs = []
    for file in files:
        if masks is None:
            candidates = [file.with_suffix(".png"), file.with_name(f"{file.stem}_mask.png")]
        else:
            candidates = [masks / f"{file.stem}_mask.png", masks / f"{file.stem}.png"]
        # A .png image is never its own mask (MVTec's layout with the masks folder forgotten).
        candidates = [c for c in candidates if c != file]
        mask = next((c for c in candidates if c.is_file()), None)
        if mask is None:
            raise FileNotFoundError(
                f"no mask for anomalous image {str(file)!r}; looked for "
                + ", ".join(str(c) for c in candidates)
            )
        pairs.append((file, mask))
    return pairs  # not empty: list_images raises on an empty folder
