"""Dataset readers, image/mask loading and the few-shot anomaly protocol.

Readers return plain :class:`Record` lists so that the split logic, which decides which real
anomalies a run may train on, stays independent of any torch ``Dataset`` wrapper. Layout errors
(missing folders, empty folders, anomalies without masks) are raised when reading, not halfway
through training.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from prn_model.backbones import check_unit_range

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
NORMAL_TYPE = "good"
# MTD masks are anti-aliased JPEG-era drawings; 128 keeps the annotated core and drops the halo.
MASK_THRESHOLD = 128
DEFAULT_NORMAL_TRAIN_FRACTION = 0.75
_SPLITS = (None, "train", "test")
# How make_split keeps images apart: one by one (the protocol), or by physical object.
SPLIT_UNITS = ("image", "group")
# MTD photographs every tile under six or seven lightings (``exp0`` .. ``exp6``) in quick
# succession, so one tile's files carry frame numbers (``_num_<n>``) at most ~570 apart, while
# the next tile usually starts thousands later. A gap above this starts a new group; two
# neighbouring tiles merged into one group only make a split more conservative.
MTD_GROUP_GAP = 1000
_MTD_FRAME = re.compile(r"^exp\d+_num_(\d+)$")

Size = int | tuple[int, int]


@dataclass(frozen=True)
class Record:
    """One image with its label; ``split`` is set only when the dataset defines train/test.

    ``group`` names the physical object the image shows when a dataset holds several images of
    one object (MTD: one tile under several lightings); ``make_split(split_by="group")`` never
    puts images of one group on both sides. None: the image is its own group.
    """

    image: Path
    mask: Path | None
    label: int
    defect_type: str
    split: str | None = None
    group: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "image", Path(self.image))
        if self.mask is not None:
            object.__setattr__(self, "mask", Path(self.mask))
        if self.label not in (0, 1) or isinstance(self.label, bool):
            raise ValueError(f"label must be 0 or 1, got {self.label!r} for {self.image}")
        if (self.label == 0) != (self.defect_type == NORMAL_TYPE):
            raise ValueError(
                f"defect_type {self.defect_type!r} does not match label {self.label} for "
                f"{self.image}: normal images use {NORMAL_TYPE!r}, anomalies any other name"
            )
        if self.split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {self.split!r}")


@dataclass
class Split:
    """Train normals, test set and the real anomalies drawn for few-shot training."""

    train_normal: list[Record]
    test: list[Record]
    few_shot: list[Record]
    seed: int | None = None
    notes: dict[str, object] = field(default_factory=dict)

    def manifest(self, root: str | Path | None = None) -> dict[str, object]:
        """Files of each part relative to ``root`` (default: their common folder).

        Stored next to a run so that it records exactly which real anomalies it trained on.
        """
        records = [*self.train_normal, *self.test, *self.few_shot]
        if root is None:
            files = [r.image for r in records] + [r.mask for r in records if r.mask]
            root = os.path.commonpath([str(f.parent) for f in files]) if files else "."
        base = Path(root)

        def entry(record: Record) -> dict[str, object]:
            return {
                "image": _relative(record.image, base),
                "mask": None if record.mask is None else _relative(record.mask, base),
                "label": record.label,
                "defect_type": record.defect_type,
                "group": record.group,
            }

        return {
            "root": str(base),
            "seed": self.seed,
            "counts": {
                "train_normal": len(self.train_normal),
                "test_normal": sum(r.label == 0 for r in self.test),
                "test_anomalous": sum(r.label == 1 for r in self.test),
                "few_shot": len(self.few_shot),
            },
            **self.notes,
            "train_normal": [entry(r) for r in self.train_normal],
            "test": [entry(r) for r in self.test],
            "few_shot": [entry(r) for r in self.few_shot],
        }

    def to_json(self, root: str | Path | None = None, indent: int = 2) -> str:
        return json.dumps(self.manifest(root), indent=indent)


def _relative(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        raise ValueError(f"{path} is not inside the manifest root {base}") from None


# --------------------------------------------------------------------------- readers


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def _list_images(folder: Path, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files directly in ``folder``, sorted by name so every run sees the same order.

    An entry named like an image that is no file (a broken link, a folder ``x.png``) is an
    error naming it, as in anomgen's ``list_images``: dropped, the run would train and
    evaluate on fewer images than the folder shows.
    """
    allowed = frozenset(extensions)
    images = []
    for path in folder.iterdir():
        if path.suffix.lower() not in allowed:
            continue
        if not path.is_file():
            kind = (
                "a folder"
                if path.is_dir()
                else "a broken link"
                if path.is_symlink()
                else "no regular file"
            )
            raise ValueError(f"image folder entry {str(path)!r} is {kind}, not an image file")
        images.append(path)
    return sorted(images, key=lambda p: p.name)


def _require_images(folder: Path, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> list[Path]:
    images = _list_images(_require_dir(folder, "image folder"), extensions)
    if not images:
        raise FileNotFoundError(f"no images ({', '.join(sorted(extensions))}) in {folder}")
    return images


def _find_mask(image: Path, mask_dir: Path) -> Path:
    for candidate in (mask_dir / f"{image.stem}.png", mask_dir / f"{image.stem}_mask.png"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"mask missing for anomalous image {image}: expected {mask_dir / image.stem}.png "
        f"or {mask_dir / image.stem}_mask.png"
    )


def read_mvtec(root: str | Path, category: str) -> list[Record]:
    """Read one MVTec AD category: ``train/good``, ``test/<defect>``, ``ground_truth/<defect>``."""
    root = _require_dir(Path(root), "dataset root")
    category_dir = root / category
    if not category_dir.is_dir():
        available = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise FileNotFoundError(
            f"category {category!r} not found in {root}; available: {', '.join(available) or '-'}"
        )
    records = [
        Record(path, None, 0, NORMAL_TYPE, "train")
        for path in _require_images(category_dir / "train" / NORMAL_TYPE)
    ]
    test_dir = _require_dir(category_dir / "test", "test folder")
    defect_dirs = sorted((p for p in test_dir.iterdir() if p.is_dir()), key=lambda p: p.name)
    if not defect_dirs:
        raise FileNotFoundError(f"no defect folders in {test_dir}")
    for defect_dir in defect_dirs:
        defect = defect_dir.name
        for path in _require_images(defect_dir):
            if defect == NORMAL_TYPE:
                records.append(Record(path, None, 0, NORMAL_TYPE, "test"))
                continue
            mask = category_dir / "ground_truth" / defect / f"{path.stem}_mask.png"
            if not mask.is_file():
                raise FileNotFoundError(f"mask missing for anomalous image {path}: expected {mask}")
            records.append(Record(path, mask, 1, defect, "test"))
    return records


def mtd_tile_groups(images: Sequence[Path], prefix: str) -> list[str | None]:
    """The physical tile of each image of one ``MT_<Class>`` folder, as ``<prefix>:<first frame>``.

    Files named ``exp<k>_num_<n>`` are sorted by frame number ``n`` and cut wherever two
    consecutive frames are more than ``MTD_GROUP_GAP`` apart (the lightings of one tile are
    taken within a few hundred frames). Other names get None: their own group.
    """
    frames = {}
    for path in images:
        match = _MTD_FRAME.match(Path(path).stem)
        if match:
            frames[Path(path)] = int(match.group(1))
    group_of: dict[Path, str] = {}
    start = previous = None
    for path, frame in sorted(frames.items(), key=lambda item: (item[1], str(item[0]))):
        if previous is None or frame - previous > MTD_GROUP_GAP:
            start = frame
        group_of[path] = f"{prefix}:{start}"
        previous = frame
    return [group_of.get(Path(path)) for path in images]


def read_mtd(root: str | Path) -> list[Record]:
    """Read the raw Magnetic Tile Defect layout ``MT_<Class>/Imgs/<name>.jpg`` + ``<name>.png``.

    ``MT_Free`` holds the normal tiles (their masks are empty and not used); every other
    ``MT_<Class>`` folder is a defect type named ``<Class>``. Every record's ``group`` is its
    physical tile (``mtd_tile_groups``): MTD shows each tile about six times.
    """
    root = _require_dir(Path(root), "MTD root")
    class_dirs = sorted((p for p in root.glob("MT_*") if p.is_dir()), key=lambda p: p.name)
    if not any(p.name == "MT_Free" for p in class_dirs):
        raise FileNotFoundError(f"MT_Free (the normal tiles) not found in {root}")
    if len(class_dirs) < 2:
        raise FileNotFoundError(f"no defect folders MT_<Class> besides MT_Free in {root}")
    # The .png files beside the images are the masks, so they never count as images here.
    image_extensions = IMAGE_EXTENSIONS - {".png"}
    records = []
    for class_dir in class_dirs:
        images = _require_images(class_dir / "Imgs", image_extensions)
        groups = mtd_tile_groups(images, class_dir.name)
        if class_dir.name == "MT_Free":
            records += [
                Record(path, None, 0, NORMAL_TYPE, group=group)
                for path, group in zip(images, groups)
            ]
            continue
        defect = class_dir.name.removeprefix("MT_")
        for path, group in zip(images, groups):
            mask = path.with_suffix(".png")
            if not mask.is_file():
                raise FileNotFoundError(f"mask missing for anomalous image {path}: expected {mask}")
            records.append(Record(path, mask, 1, defect, group=group))
    return records


def read_folder(
    normal_dir: str | Path,
    anomaly_dir: str | Path | None = None,
    mask_dir: str | Path | None = None,
) -> list[Record]:
    """Read a generic layout: normal images in one folder, anomalies in another.

    Anomalies directly in ``anomaly_dir`` take the folder's name as defect type; images in its
    sub-folders take the sub-folder's name. Masks are matched by stem (``<name>.png`` or
    ``<name>_mask.png``) in ``mask_dir`` (or ``mask_dir/<sub-folder>``); without ``mask_dir``
    anomalies carry no mask, so they can be tested on but not drawn as few-shot examples. An
    empty sub-folder is an error, not a defect type quietly left out.
    """
    records = [Record(path, None, 0, NORMAL_TYPE) for path in _require_images(Path(normal_dir))]
    if anomaly_dir is None:
        if mask_dir is not None:
            raise ValueError(f"mask_dir {mask_dir} given without anomaly_dir")
        return records
    anomaly_dir = _require_dir(Path(anomaly_dir), "anomaly folder")
    if mask_dir is not None:
        mask_dir = _require_dir(Path(mask_dir), "mask folder")
        if mask_dir.resolve() == anomaly_dir.resolve():
            raise ValueError(f"mask_dir must differ from anomaly_dir ({anomaly_dir})")
    groups = [(anomaly_dir.name, anomaly_dir, mask_dir)]
    for sub in sorted((p for p in anomaly_dir.iterdir() if p.is_dir()), key=lambda p: p.name):
        groups.append((sub.name, sub, None if mask_dir is None else mask_dir / sub.name))
    anomalies = []
    for defect, folder, masks in groups:
        images = _list_images(folder)
        if not images and folder is not anomaly_dir:
            raise FileNotFoundError(
                f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in defect folder {folder}; "
                "fill it or remove it"
            )
        for path in images:
            mask = None if masks is None else _find_mask(path, masks)
            anomalies.append(Record(path, mask, 1, defect))
    if not anomalies:
        raise FileNotFoundError(f"no images in {anomaly_dir} or its sub-folders")
    return records + anomalies


# --------------------------------------------------------------------------- loading


def _parse_size(size: Size | None) -> tuple[int, int] | None:
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int | np.integer) else size
    if isinstance(pair, str | bytes) or not isinstance(pair, Sequence) or len(pair) != 2:
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v > 0 for v in pair):
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    return int(pair[0]), int(pair[1])


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    return path


def _read_pixels(path: Path, grayscale: bool | None) -> np.ndarray:
    """Decode to an (H, W, C) uint8 or uint16 array; C is 1 or 3 (alpha dropped)."""
    path = _require_file(Path(path))
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode.startswith("I;16"):
                pixels = np.asarray(image, dtype=np.uint16)[..., None]
                return np.repeat(pixels, 3, axis=2) if grayscale is False else pixels
            if image.mode not in {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr"}:
                raise ValueError(f"unsupported image mode {image.mode!r} in {path}")
            gray = grayscale if grayscale is not None else image.mode in {"1", "L", "LA"}
            return np.asarray(image.convert("L" if gray else "RGB")).reshape(
                image.height, image.width, -1
            )
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from error


def _header(path: Path) -> tuple[str, int, int]:
    """Mode, height and width from the file header, without decoding the pixels."""
    path = _require_file(path)
    try:
        with Image.open(path) as image:
            return image.mode, image.height, image.width
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from error


def _native_hw(path: Path) -> tuple[int, int]:
    return _header(path)[1:]


def image_channels(records: Iterable[Record]) -> int:
    """1 when every record's image file is grayscale, else 3: a dataset mixing both is loaded
    as colour (grey replicated, nothing lost), so all its tensors stack. Reads headers only."""
    for record in records:
        mode = _header(Path(record.image))[0]
        if mode not in {"1", "L", "LA"} and not mode.startswith("I;16"):
            return 3
    return 1


def _resize(pixels: np.ndarray, hw: tuple[int, int], interpolation: int) -> np.ndarray:
    resized = cv2.resize(pixels, (hw[1], hw[0]), interpolation=interpolation)
    return resized.reshape(hw[0], hw[1], pixels.shape[2])


def _resize_float(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(H, W, C) float32 in [0, 1] to ``hw``: area averaging to shrink, bilinear to enlarge."""
    if hw == image.shape[:2]:
        return image
    shrinking = hw[0] * hw[1] < image.shape[0] * image.shape[1]
    image = _resize(image, hw, cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return np.clip(image, 0.0, 1.0)


def resize_image(image: torch.Tensor, size: Size) -> torch.Tensor:
    """A float (C, H, W) image in [0, 1] resized as ``load_image`` resizes, on its device.

    Training and evaluation read files through ``load_image``; ``PRN.predict`` resizes
    through this, so an image scores the same whether it is given at its own size or at the
    network's.
    """
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or not image.is_floating_point():
        got = f"{image.dtype} {tuple(image.shape)}" if isinstance(image, torch.Tensor) else image
        raise ValueError(f"image must be a float (C, H, W) tensor, got {got}")
    if image.numel() == 0:
        raise ValueError(f"image is empty: {tuple(image.shape)}")
    # Resizing clips to [0, 1]: a 0..255 image would come out white, NaN would pass.
    check_unit_range(image, "image")
    hw = _parse_size(size)
    if hw is None:
        raise ValueError("size must be a positive int or (height, width), got None")
    if hw == tuple(image.shape[-2:]):
        return image
    pixels = image.detach().to("cpu", torch.float32).permute(1, 2, 0).numpy()
    resized = _resize_float(np.ascontiguousarray(pixels), hw)
    return torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))).to(image.device)


def load_image(
    path: str | Path, size: Size | None = None, grayscale: bool | None = None
) -> torch.Tensor:
    """Load an image as a float (C, H, W) tensor in [0, 1].

    ``grayscale=None`` keeps the file's own channel count (1 for gray, 3 otherwise);
    True/False force 1 or 3 channels. Shrinking uses area averaging (no aliasing on the
    fine textures anomalies live in), enlarging uses bilinear interpolation.
    """
    hw = _parse_size(size)
    pixels = _read_pixels(Path(path), grayscale)
    scale = float(np.iinfo(pixels.dtype).max)
    image = pixels.astype(np.float32) / scale
    if hw is not None:
        image = _resize_float(image, hw)
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def _binary_mask(path: Path) -> np.ndarray:
    pixels = _read_pixels(path, grayscale=True)[..., 0]
    threshold = MASK_THRESHOLD * (257 if pixels.dtype == np.uint16 else 1)
    return pixels >= threshold


def load_mask(
    path: str | Path | None, size: Size | None = None, like: torch.Tensor | None = None
) -> torch.Tensor:
    """Load a mask as a float (1, H, W) tensor of {0, 1} (pixels >= 128 are anomalous).

    ``path=None`` (normal image) gives zeros. The output size is ``size`` if given, else the
    spatial size of ``like`` (the image the mask belongs to), else the mask's own size. Without
    ``size`` the mask must already match ``like``. Resizing uses pixel-centre nearest neighbour,
    so the mask stays binary and aligned with the area/bilinear-resized image.
    """
    hw = _parse_size(size)
    if like is not None:
        if like.ndim < 2:
            raise ValueError(
                f"like must have spatial dims (..., H, W), got shape {tuple(like.shape)}"
            )
        like_hw = (int(like.shape[-2]), int(like.shape[-1]))
        if hw is not None and hw != like_hw:
            raise ValueError(f"size {hw} does not match the image size {like_hw} of like")
    else:
        like_hw = None
    if path is None:
        out_hw = hw or like_hw
        if out_hw is None:
            raise ValueError("load_mask(None) needs size or like to know the output shape")
        return torch.zeros(1, *out_hw)
    mask = _binary_mask(Path(path)).astype(np.uint8)
    if hw is None and like_hw is not None and like_hw != mask.shape:
        raise ValueError(f"mask {path} has size {mask.shape}, but its image has size {like_hw}")
    if hw is not None and hw != mask.shape:
        mask = cv2.resize(mask, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST_EXACT)
    return torch.from_numpy(mask.astype(np.float32))[None]


def load_record(
    record: Record, size: Size | None = None, grayscale: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load an image and its mask, checking that both files have the same native size."""
    if record.mask is not None:
        image_hw, mask_hw = _native_hw(record.image), _native_hw(record.mask)
        if image_hw != mask_hw:
            raise ValueError(
                f"image {record.image} has size {image_hw} but its mask {record.mask} has {mask_hw}"
            )
    image = load_image(record.image, size, grayscale)
    return image, load_mask(record.mask, size, like=image)


def load_records(
    records: Sequence[Record], size: Size | None = None, grayscale: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, C, H, W) and masks (N, 1, H, W) of ``records``, all at ``size``
    (``grayscale`` as in ``load_image``; None needs files of one channel count)."""
    images, masks = zip(*(load_record(r, size, grayscale) for r in records))
    return torch.stack(images), torch.stack(masks)


def mask_is_empty(record: Record) -> bool:
    """True when the record has no mask file or no mask pixel reaches the threshold."""
    return record.mask is None or not _binary_mask(record.mask).any()


# --------------------------------------------------------------------------- few-shot split


def group_key(record: Record) -> object:
    """The physical object ``record`` shows: its group, or the image itself without one."""
    return record.group if record.group is not None else ("image", record.image)


def _split_normals(
    normals: Sequence[Record], fraction: float, seed: int, by_group: bool
) -> tuple[list[Record], list[Record]]:
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"normal_train_fraction must be in (0, 1), got {fraction}")
    # Units that go to one side whole: images, or groups of images of one object.
    unit_of = [group_key(r) if by_group else r.image for r in normals]
    keys = list(dict.fromkeys(unit_of))
    what = "normal groups" if by_group else "normal images"
    n_train = round(fraction * len(keys))
    if not 0 < n_train < len(keys):
        raise ValueError(
            f"normal_train_fraction {fraction} of {len(keys)} {what} leaves the train "
            "or test part empty"
        )
    # A separate stream keeps the anomaly draw independent of how the normals were split.
    random.Random(f"prn-split:{seed}:normal").shuffle(keys)
    train = set(keys[:n_train])
    return (
        [r for r, unit in zip(normals, unit_of) if unit in train],
        [r for r, unit in zip(normals, unit_of) if unit not in train],
    )


def _draw_anomalies(
    anomalies: Sequence[Record], n: int, seed: int, by_group: bool = False
) -> list[Record]:
    """Round-robin over sorted defect types, random within a type, skipping empty masks (and,
    ``by_group``, images of an object already drawn).

    Each type is shuffled once up front, so for a fixed seed the n-shot draw is a prefix of
    the (n+k)-shot draw and runs with more shots only add anomalies.
    """
    rng = random.Random(f"prn-split:{seed}:anomaly")
    queues: dict[str, list[Record]] = {}
    for defect in sorted({r.defect_type for r in anomalies}):
        queue = [r for r in anomalies if r.defect_type == defect]
        rng.shuffle(queue)
        queues[defect] = queue[::-1]  # pop() from the end takes the shuffled order
    drawn: list[Record] = []
    drawn_groups: set[object] = set()
    skipped_empty = skipped_group = 0
    while len(drawn) < n and queues:
        for defect in list(queues):
            if len(drawn) == n:
                break
            queue = queues[defect]
            while queue:
                candidate = queue.pop()
                if mask_is_empty(candidate):
                    skipped_empty += 1
                    continue
                if by_group and group_key(candidate) in drawn_groups:
                    skipped_group += 1
                    continue
                drawn.append(candidate)
                drawn_groups.add(group_key(candidate))
                break
            if not queue:
                del queues[defect]
    if len(drawn) < n:
        raise ValueError(
            f"n_anomalies={n} requested but only {len(drawn)} anomalies can be drawn "
            f"({len(anomalies)} anomalies, {skipped_empty} with empty or no mask"
            + (f", {skipped_group} of an object already drawn)" if by_group else ")")
        )
    return drawn


def make_split(
    records: Sequence[Record],
    n_anomalies: int = 10,
    seed: int = 0,
    normal_train_fraction: float | None = None,
    split_by: str = "image",
) -> Split:
    """Few-shot protocol: normal train set, N real anomalies for training, the rest for test.

    Normal images follow the dataset's own train/test split when it has one (MVTec) and
    ``normal_train_fraction`` is None; otherwise all normal images are shuffled by ``seed`` and
    split by the fraction (default 3:1). Drawn anomalies are removed from the test set so
    evaluation never sees an image the model trained on; anomalies with empty masks are never
    drawn and stay in the test set.

    ``split_by="group"`` treats each ``Record.group`` (one physical object) as the unit: normal
    groups are split by the fraction, the drawn anomalies come from distinct groups, and every
    image sharing a group with a drawn one leaves the test set too. On MTD, which shows each
    tile about six times, ``"image"`` lets a test image's twins under other lightings into
    training (docs/results.md, "MTD shows every tile six times").
    """
    if isinstance(n_anomalies, bool) or not isinstance(n_anomalies, int) or n_anomalies < 0:
        raise ValueError(f"n_anomalies must be a non-negative int, got {n_anomalies!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if split_by not in SPLIT_UNITS:
        raise ValueError(f"split_by must be one of {SPLIT_UNITS}, got {split_by!r}")
    if not records:
        raise ValueError("make_split got no records")
    by_group = split_by == "group"
    ordered = sorted(records, key=lambda r: (r.label, r.defect_type, str(r.image)))
    if len({r.image for r in ordered}) != len(ordered):
        raise ValueError("records contain the same image more than once")
    splits = {r.split for r in ordered}
    if None in splits and len(splits) > 1:
        raise ValueError("records mix a predefined train/test split with unsplit records")
    if by_group:
        mixed = {r.group for r in ordered if r.group is not None and r.label == 0} & {
            r.group for r in ordered if r.group is not None and r.label == 1
        }
        if mixed:
            raise ValueError(f"group {sorted(mixed)[0]!r} holds both normal and anomalous images")

    normals = [r for r in ordered if r.label == 0]
    predefined = None not in splits and normal_train_fraction is None
    if predefined:
        train_anomalies = [r for r in ordered if r.split == "train" and r.label == 1]
        if train_anomalies:
            raise ValueError(f"anomalous image in the predefined train split: {train_anomalies[0]}")
        train_normal = [r for r in normals if r.split == "train"]
        test_normal = [r for r in normals if r.split == "test"]
        if not train_normal:
            raise ValueError("the predefined train split has no normal images")
        fraction = None
    else:
        fraction = (
            DEFAULT_NORMAL_TRAIN_FRACTION
            if normal_train_fraction is None
            else normal_train_fraction
        )
        train_normal, test_normal = _split_normals(normals, fraction, seed, by_group)

    anomalies = [r for r in ordered if r.label == 1]
    few_shot = _draw_anomalies(anomalies, n_anomalies, seed, by_group)
    drawn = set(few_shot)
    drawn_groups = {group_key(r) for r in few_shot} if by_group else set()
    held_out = {r for r in anomalies if r not in drawn and group_key(r) in drawn_groups}
    test = test_normal + [r for r in anomalies if r not in drawn and r not in held_out]
    notes: dict[str, object] = {
        "normal_split": "predefined" if predefined else f"random, train fraction {fraction}",
        "split_by": split_by,
    }
    if by_group:
        notes["held_out_twins"] = len(held_out)
    return Split(train_normal=train_normal, test=test, few_shot=few_shot, seed=seed, notes=notes)
