"""A torch Dataset of synthesized samples over a folder or list of normal images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from anomgen.core import AnomalyTransform, check_int, check_seed, check_size, derive_seed
from anomgen.functional.geometry import match_channels
from anomgen.io import _checked_tensor, check_channels, list_images, read_image, resize

__all__ = ["SynthesisDataset"]


class SynthesisDataset(Dataset):
    """Normal images turned into training samples by ``transform``.

    Item ``i`` of epoch ``e`` is synthesized with ``derive_seed(seed, e, i)``: it is the
    same whatever the number of DataLoader workers or the batch it lands in, and needs no
    worker seeding. Call ``set_epoch`` between epochs for fresh samples (persistent workers
    see it too).

    ``images`` is a folder, a list of image files or a list of (C,H,W) float tensors in
    [0, 1]. ``size`` (an int or ``(H, W)``) resizes them; ``channels`` 1 or 3 converts
    them (files as ``read_image`` reads them, tensors to luma grey or repeated RGB).

    Items are dicts: ``image`` (C,H,W), ``mask`` (1,H,W), ``label`` (0-dim float),
    ``strategy`` (str) and ``index``.
    """

    def __init__(
        self,
        images: str | Path | Sequence[str | Path] | Sequence[torch.Tensor],
        transform: AnomalyTransform,
        size: int | tuple[int, int] | None = None,
        channels: int | None = None,
        seed: int = 0,
        cache: bool = True,
    ) -> None:
        if isinstance(images, str | Path):
            images = list_images(images)
        self.sources = list(images)
        if not self.sources:
            raise ValueError("SynthesisDataset needs at least one normal image")
        for i, source in enumerate(self.sources):
            if not isinstance(source, str | Path | torch.Tensor):
                raise ValueError(
                    "images must be a folder, image files or (C,H,W) tensors; "
                    f"images[{i}] is a {type(source).__name__}"
                )
            if isinstance(source, torch.Tensor):
                # Checked here: resizing and channel conversion would clamp a 0..255 image
                # to white, and other shapes would fail deep inside torch.
                _checked_tensor(source, f"images[{i}]")
        if not isinstance(transform, AnomalyTransform):
            raise ValueError(
                f"transform must be an anomgen transform, got {type(transform).__name__}"
            )
        self.transform = transform
        self.size = None if size is None else check_size("size", size)
        self.channels = check_channels(channels)
        self.seed = check_seed(seed)
        # In shared memory: DataLoader workers hold copies of the dataset, and persistent ones
        # (persistent_workers=True) would otherwise keep drawing the epoch they started with.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._cache: dict[int, torch.Tensor] | None = {} if cache else None

    @property
    def epoch(self) -> int:
        """The epoch of items requested by index alone (``set_epoch``)."""
        return int(self._epoch) % 2**64

    def set_epoch(self, epoch: int) -> None:
        """Fresh samples for ``epoch``, in this process and in every DataLoader worker."""
        epoch = check_seed(epoch, "epoch")
        # int64 holds epochs from 2**63 on as their two's complement, undone by ``epoch``.
        self._epoch.fill_(epoch - 2**64 if epoch >= 2**63 else epoch)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A deep copy or unpickled dataset holds its epoch in shared memory too: in private
        memory, workers forked from it would keep seeing the epoch they started with."""
        self.__dict__.update(state)
        self._epoch.share_memory_()  # a no-op where a worker receives the shared original

    def __len__(self) -> int:
        return len(self.sources)

    def load(self, index: int) -> torch.Tensor:
        """The normal image ``index`` as a (C,H,W) float tensor, resized."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        source = self.sources[index]
        if not isinstance(source, torch.Tensor):
            image = read_image(source, self.channels)
        elif self.channels is not None:
            image = match_channels(source, self.channels)
        else:
            image = source
        if self.size is not None:
            image = resize(image, self.size)
        if self._cache is not None:
            self._cache[index] = image
        return image

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """Item ``index``, or ``(index, epoch)`` from a sampler that tracks epochs itself
        (the epoch then travels with the request, so DataLoader workers need no state)."""
        if isinstance(key, tuple) and len(key) != 2:
            raise ValueError(f"an item key is an index or an (index, epoch) pair, got {key!r}")
        index, epoch = key if isinstance(key, tuple) else (key, self.epoch)
        if not 0 <= check_int("index", index) < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        result = self.transform(self.load(index), seed=derive_seed(self.seed, epoch, index))
        return {
            "image": result.image,
            "mask": result.mask,
            "label": torch.tensor(float(result.meta["anomalous"])),
            "strategy": result.meta["strategy"],
            "index": index,
        }
