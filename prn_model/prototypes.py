"""Multi-scale prototypes of PRN (Zhang et al., CVPR 2023, Sec. 3.2 "Multi-scale Prototypes").

PRN represents "normal" by a few *whole* normal feature maps per scale: the k-means centres of
the training images' feature maps, each map flattened to one C*H*W vector. At run time every
input map is compared with its nearest prototype and the element-wise squared difference (the
"residual") tells the network where and how the input departs from normal.

``matching="patch"`` is our variant for textures that are not aligned from image to image
(MTD tiles, fabrics): the prototypes are k-means centres of single feature *vectors* (one per
location of every normal map), and every location of an input map is compared with its own
nearest centre. Whole-map matching needs a normal image laid out like the input; patch
matching only needs the same local appearance somewhere in the normal set (as PatchCore). On
MTD it did worse than whole-map matching all the same (docs/results.md, "Ablations"), so it is
off by default.

Memory: ``PrototypeBank.fit`` writes the feature maps of all normal images straight into one
preallocated (n, C*H*W) tensor per scale (no list of batches, no ``torch.cat``), and ``kmeans``
only reads that tensor through row slices (views), a few rows at a time. Its temporaries are
one chunk of rows (about 2**24 elements, 64 MiB in float32, by default), a (chunk, k) distance
block and O(k * C*H*W) for the centres, so at most one copy of the feature bank is ever held.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = [
    "MATCHING_MODES",
    "NearestPrototype",
    "PrototypeBank",
    "kmeans",
    "nearest_patch_prototype",
    "nearest_prototype",
    "num_prototypes",
]


def num_prototypes(n_normal: int, ratio: float = 0.1) -> int:
    """Number of prototypes for ``n_normal`` images: ``max(1, round(ratio * n_normal))``.

    PRN uses about 10 % of the normal images as prototypes (ratio 0.1). Halves round up
    (25 images -> 3), unlike Python's round-half-to-even.
    """
    if isinstance(n_normal, bool) or not isinstance(n_normal, int) or n_normal < 1:
        raise ValueError(f"n_normal must be a positive int, got {n_normal!r}")
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
    # In decimal, as the ratio is written: 0.7 * 45 is 31.499999999999996 in binary floats.
    return max(1, math.floor(Fraction(repr(float(ratio))) * n_normal + Fraction(1, 2)))


MATCHING_MODES = ("image", "patch")
# Patch matching clusters at most this many feature vectors per scale (a seeded random
# subset of all locations of all normal images): k-means cost grows with the rows (about
# 20 s of seeding and 1 s per Lloyd step per scale at this size on 2 CPU cores).
_MAX_PATCH_ROWS = 65_536

# Rows per k-means chunk are chosen so that one chunk holds about this many elements.
_CHUNK_ELEMENTS = 2**24


def _squared_distances(
    points: Tensor, point_norms: Tensor, centres: Tensor, centre_norms: Tensor | None = None
) -> Tensor:
    """Squared L2 distances (rows of ``points`` x rows of ``centres``) via one matmul.

    Uses |x|^2 - 2 x.c + |c|^2 so no (n, k, D) difference tensor is formed; clamped at 0 because
    the expansion can round slightly below zero. ``centre_norms`` (|c|^2) is computed if absent.
    """
    if centre_norms is None:
        centre_norms = centres.square().sum(dim=1)
    distances = point_norms[:, None] - 2.0 * (points @ centres.T) + centre_norms[None, :]
    return distances.clamp_min_(0.0)


def _row_chunks(n: int, chunk_size: int) -> list[slice]:
    return [slice(start, start + chunk_size) for start in range(0, n, chunk_size)]


def _assign(
    bank: Tensor, bank_norms: Tensor, centres: Tensor, chunk_size: int
) -> tuple[Tensor, Tensor]:
    """Nearest centre and its squared distance for every bank row, ``chunk_size`` rows at once."""
    labels = torch.empty(bank.shape[0], dtype=torch.long, device=bank.device)
    min_distances = torch.empty(bank.shape[0], dtype=bank.dtype, device=bank.device)
    for rows in _row_chunks(bank.shape[0], chunk_size):
        distances = _squared_distances(bank[rows], bank_norms[rows], centres)
        min_distances[rows], labels[rows] = distances.min(dim=1)
    return labels, min_distances


def _kmeans_plus_plus(
    bank: Tensor, bank_norms: Tensor, k: int, generator: torch.Generator, chunk_size: int
) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) drawn from ``generator`` only."""
    n = bank.shape[0]
    centres = torch.empty((k, bank.shape[1]), dtype=bank.dtype, device=bank.device)
    first = int(torch.randint(n, (1,), generator=generator, device=bank.device))
    centres[0] = bank[first]
    closest = torch.full((n,), math.inf, dtype=bank.dtype, device=bank.device)
    for index in range(1, k):
        for rows in _row_chunks(n, chunk_size):
            new = _squared_distances(bank[rows], bank_norms[rows], centres[index - 1 : index])
            torch.minimum(closest[rows], new[:, 0], out=closest[rows])
        if float(closest.sum()) > 0.0:
            chosen = int(torch.multinomial(closest, 1, generator=generator))
        else:  # every point already coincides with a centre: any point is as good as another
            chosen = int(torch.randint(n, (1,), generator=generator, device=bank.device))
        centres[index] = bank[chosen]
    return centres


def _reseed_empty(centres: Tensor, counts: Tensor, bank: Tensor, min_distances: Tensor) -> None:
    """Move each empty centre onto one of the points worst served by their centres.

    Deterministic: points are ranked by distance to their centre, ties broken by index (stable
    sort), and the i-th empty cluster takes the i-th point of that ranking.
    """
    empty = torch.nonzero(counts == 0).flatten()
    farthest = torch.sort(min_distances, descending=True, stable=True).indices[: empty.numel()]
    centres[empty] = bank[farthest]


def kmeans(
    bank: Tensor,
    k: int,
    *,
    generator: torch.Generator,
    max_iter: int = 100,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Cluster the rows of ``bank`` (n, D) into ``k`` centres with k-means++ and Lloyd steps.

    Deterministic for a given ``generator`` state (only it is used for the random choices, and
    centre sums are matmuls with a one-hot matrix rather than atomics). ``bank`` is read, never
    copied, ``chunk_size`` rows at a time (default: about 2**24 elements per chunk); see the
    module docstring. Lloyd steps stop when no assignment changes or after ``max_iter``. Empty
    clusters are re-seeded deterministically.

    Returns ``(centres (k, D), labels (n,))``.
    """
    if not isinstance(bank, Tensor) or bank.ndim != 2 or not bank.is_floating_point():
        raise ValueError(f"bank must be a 2-D float tensor (n, D), got {_describe(bank)}")
    n = bank.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"k must be an int in [1, n={n}], got {k!r}")
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ELEMENTS // max(1, bank.shape[1]))
    if max_iter < 1 or chunk_size < 1:
        raise ValueError(f"max_iter and chunk_size must be >= 1, got {max_iter}, {chunk_size}")

    bank_norms = torch.empty(n, dtype=bank.dtype, device=bank.device)
    for rows in _row_chunks(n, chunk_size):
        bank_norms[rows] = bank[rows].square().sum(dim=1)
    if not torch.isfinite(bank_norms).all():  # a NaN/inf anywhere in a row reaches its norm
        raise ValueError("bank contains NaN or infinite values (or values too large to square)")
    centres = _kmeans_plus_plus(bank, bank_norms, k, generator, chunk_size)
    labels, min_distances = _assign(bank, bank_norms, centres, chunk_size)
    for _ in range(max_iter):
        sums = torch.zeros_like(centres)
        for rows in _row_chunks(n, chunk_size):
            sums += nn.functional.one_hot(labels[rows], k).to(bank.dtype).T @ bank[rows]
        counts = torch.bincount(labels, minlength=k)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None].to(bank.dtype)
        if not filled.all():
            _reseed_empty(centres, counts, bank, min_distances)
        new_labels, min_distances = _assign(bank, bank_norms, centres, chunk_size)
        converged = torch.equal(new_labels, labels)
        labels = new_labels
        if converged:
            break
    return centres, labels


class NearestPrototype(NamedTuple):
    """Result of :func:`nearest_prototype`: per-sample index, squared distance and residual."""

    index: Tensor  # (B,) long
    distance: Tensor  # (B,) squared L2 distance over the whole map
    residual: Tensor  # (B, C, H, W) = (features - nearest) ** 2


def nearest_prototype(
    features: Tensor, prototypes: Tensor, prototype_norms: Tensor | None = None
) -> NearestPrototype:
    """For each map in ``features`` (B, C, H, W) find the closest of ``prototypes`` (K, C, H, W).

    Closeness is the L2 distance over the whole flattened map, as PRN matches entire normal
    feature maps; the residual is the element-wise squared difference to that prototype.
    ``prototype_norms`` (K,), the prototypes' squared L2 norms, may be passed to save
    recomputing them on every call.
    """
    if not isinstance(features, Tensor) or features.ndim != 4:
        raise ValueError(f"features must be a (B, C, H, W) tensor, got {_describe(features)}")
    if not isinstance(prototypes, Tensor) or prototypes.ndim != 4 or prototypes.shape[0] < 1:
        raise ValueError(
            f"prototypes must be a (K>=1, C, H, W) tensor, got {_describe(prototypes)}"
        )
    if features.shape[1:] != prototypes.shape[1:]:
        raise ValueError(
            f"feature map shape {tuple(features.shape[1:])} does not match prototype shape "
            f"{tuple(prototypes.shape[1:])}"
        )
    # float32 even under mixed precision: in float16 the |x|^2 - 2 x.c + |c|^2 expansion over
    # C*H*W elements overflows or cancels catastrophically.
    with torch.autocast(device_type=features.device.type, enabled=False):
        features = features.float()
        prototypes = prototypes.float()
        flat = features.flatten(1)
        distances = _squared_distances(
            flat,
            flat.square().sum(dim=1),
            prototypes.flatten(1),
            None if prototype_norms is None else prototype_norms.float(),
        )
        distance, index = distances.min(dim=1)
        residual = (features - prototypes[index]).square()
    return NearestPrototype(index=index, distance=distance, residual=residual)


def nearest_patch_prototype(
    features: Tensor, prototypes: Tensor, prototype_norms: Tensor | None = None
) -> Tensor:
    """Residual ``(feature - nearest centre) ** 2`` where each location picks its own centre.

    ``features`` (B, C, H, W), ``prototypes`` (K, C, 1, 1); returns (B, C, H, W).
    """
    if not isinstance(features, Tensor) or features.ndim != 4:
        raise ValueError(f"features must be a (B, C, H, W) tensor, got {_describe(features)}")
    if (
        not isinstance(prototypes, Tensor)
        or prototypes.ndim != 4
        or prototypes.shape[0] < 1
        or prototypes.shape[1:] != (features.shape[1], 1, 1)
    ):
        raise ValueError(
            f"prototypes must be a (K>=1, {features.shape[1]}, 1, 1) tensor, "
            f"got {_describe(prototypes)}"
        )
    with torch.autocast(device_type=features.device.type, enabled=False):
        batch, channels, height, width = features.shape
        vectors = features.float().permute(0, 2, 3, 1).reshape(-1, channels)
        centres = prototypes.float().flatten(1)
        distances = _squared_distances(
            vectors,
            vectors.square().sum(dim=1),
            centres,
            None if prototype_norms is None else prototype_norms.float(),
        )
        nearest = centres[distances.argmin(dim=1)]
        residual = (vectors - nearest).square()
    return residual.reshape(batch, height, width, channels).permute(0, 3, 1, 2)


class PrototypeBank(nn.Module):
    """PRN multi-scale prototypes (Sec. 3.2): K whole normal feature maps per scale.

    With ``matching="patch"`` the K prototypes of a scale are feature vectors (K_i, C_i, 1, 1)
    matched location by location (see the module docstring).
    The prototypes are buffers ``prototypes_{i}`` of shape (K_i, C_i, H_i, W_i), so they travel
    in the state dict. Before fitting they have K_i = 0 unless ``num_prototypes`` is given (to
    build a model whose buffer shapes match a checkpoint); loading a state dict also adopts the
    stored K_i, so a fresh bank can load any fitted one with the same C, H, W.
    ``is_fitted`` is itself a buffer, so zero-filled placeholders never pass as prototypes.
    """

    def __init__(
        self,
        feature_shapes: Sequence[Sequence[int]],
        num_prototypes: Sequence[int] | None = None,
        matching: str = "image",
    ) -> None:
        super().__init__()
        shapes = [tuple(int(v) for v in shape) for shape in feature_shapes]
        if not shapes or any(len(s) != 3 or min(s) < 1 for s in shapes):
            raise ValueError(f"feature_shapes must be non-empty (C, H, W) triples, got {shapes}")
        if matching not in MATCHING_MODES:
            raise ValueError(f"matching must be one of {MATCHING_MODES}, got {matching!r}")
        self.matching = matching
        counts = [0] * len(shapes) if num_prototypes is None else [int(k) for k in num_prototypes]
        if len(counts) != len(shapes) or any(k < 0 for k in counts):
            raise ValueError(
                f"num_prototypes must hold {len(shapes)} non-negative ints, got {num_prototypes}"
            )
        self.feature_shapes: list[tuple[int, int, int]] = shapes  # type: ignore[assignment]
        self.prototype_shapes = [
            shape if matching == "image" else (shape[0], 1, 1) for shape in shapes
        ]
        for scale, (shape, count) in enumerate(zip(self.prototype_shapes, counts)):
            self.register_buffer(f"prototypes_{scale}", torch.zeros((count, *shape)))
            # |prototype|^2, derived from the prototypes (hence not saved), cached for inference
            self.register_buffer(f"norms_{scale}", torch.zeros(count), persistent=False)
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @property
    def n_scales(self) -> int:
        return len(self.feature_shapes)

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    @property
    def prototypes(self) -> list[Tensor]:
        return [getattr(self, f"prototypes_{scale}") for scale in range(self.n_scales)]

    @property
    def num_prototypes(self) -> tuple[int, ...]:
        return tuple(p.shape[0] for p in self.prototypes)

    def _check_features(self, features: Sequence[Tensor]) -> list[Tensor]:
        if not isinstance(features, list | tuple) or len(features) < self.n_scales:
            raise ValueError(
                f"expected a list of >= {self.n_scales} feature maps, got {_describe(features)}"
            )
        maps = list(features[: self.n_scales])
        for scale, (feature, shape) in enumerate(zip(maps, self.feature_shapes)):
            if not isinstance(feature, Tensor) or feature.ndim != 4 or feature.shape[1:] != shape:
                raise ValueError(
                    f"scale {scale}: expected feature maps (B, {', '.join(map(str, shape))}), "
                    f"got {_describe(feature)}"
                )
        return maps

    @torch.no_grad()
    def fit(
        self,
        feature_batches: Iterable[Sequence[Tensor]],
        n: int,
        ratio: float = 0.1,
        seed: int = 0,
        max_iter: int = 100,
        k: int | None = None,
    ) -> PrototypeBank:
        """Cluster the feature maps of ``n`` normal images into ``num_prototypes(n, ratio)``.

        ``feature_batches`` yields, per batch of images, a list of feature maps (one per scale;
        extra deeper scales are ignored). The total batch size must equal ``n``, which lets the
        bank be preallocated once (see the module docstring). With patch matching, ``k``
        (required there) centres are fitted to at most 65,536 of the n * H * W vectors.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        patch = self.matching == "patch"
        if patch:
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise ValueError(f"patch matching needs k >= 1 prototypes, got {k!r}")
            # Each image gives the same number of locations, drawn without replacement.
            per_image = [
                max(1, min(h * w, _MAX_PATCH_ROWS // n)) for _, h, w in self.feature_shapes
            ]
        else:
            k = num_prototypes(n, ratio)
            per_image = [1] * self.n_scales
        sampler = torch.Generator().manual_seed(int(seed))
        banks: list[Tensor] = []
        for start, maps in self._checked_batches(feature_batches, n):
            if not banks:
                banks = [
                    torch.empty(
                        (n * count, m.shape[1] if patch else m[0].numel()),
                        dtype=torch.float32,
                        device=m.device,
                    )
                    for m, count in zip(maps, per_image)
                ]
            for bank, feature, count in zip(banks, maps, per_image):
                rows = _sampled_vectors(feature, count, sampler) if patch else feature.flatten(1)
                bank[start * count : start * count + rows.shape[0]].copy_(rows)

        generator = torch.Generator(device=banks[0].device).manual_seed(int(seed))
        for scale in range(self.n_scales):
            bank = banks.pop(0)  # drop the list's reference so each bank is freed once clustered
            count = min(k, bank.shape[0])
            centres, _ = kmeans(bank, count, generator=generator, max_iter=max_iter)
            del bank
            prototypes = centres.reshape(count, *self.prototype_shapes[scale])
            setattr(self, f"prototypes_{scale}", prototypes.to(self.fitted.device))
        self._update_norms()
        self.fitted.fill_(True)
        return self

    def _checked_batches(
        self, feature_batches: Iterable[Sequence[Tensor]], n: int
    ) -> Iterator[tuple[int, list[Tensor]]]:
        """(index of the batch's first image, its checked maps); the total must be ``n``."""
        filled = 0
        for batch in feature_batches:
            maps = self._check_features(batch)
            size = maps[0].shape[0]
            if any(m.shape[0] != size for m in maps):
                raise ValueError("all scales of a batch must have the same batch size")
            if filled + size > n:
                raise ValueError(f"feature_batches yielded more than n={n} samples")
            yield filled, maps
            filled += size
        if filled != n:
            raise ValueError(f"feature_batches yielded {filled} samples, expected n={n}")

    def _update_norms(self) -> None:
        for scale, prototypes in enumerate(self.prototypes):
            setattr(self, f"norms_{scale}", prototypes.square().flatten(1).sum(dim=1))

    def residuals(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Residual ``(feature - nearest prototype) ** 2`` for each of the first n_scales maps."""
        if not self.is_fitted:
            raise RuntimeError(
                "prototypes are not fitted: call fit() (or PRN.fit_prototypes) or load a state dict"
            )
        maps = self._check_features(features)
        if self.matching == "patch":
            return [
                nearest_patch_prototype(feature, prototypes, getattr(self, f"norms_{scale}"))
                for scale, (feature, prototypes) in enumerate(zip(maps, self.prototypes))
            ]
        return [
            nearest_prototype(feature, prototypes, getattr(self, f"norms_{scale}")).residual
            for scale, (feature, prototypes) in enumerate(zip(maps, self.prototypes))
        ]

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        return self.residuals(features)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, *args) -> None:
        """Adopt the stored number of prototypes (K) so a fresh bank loads a fitted one."""
        for scale, shape in enumerate(self.prototype_shapes):
            key = f"{prefix}prototypes_{scale}"
            stored = state_dict.get(key)
            if isinstance(stored, Tensor) and stored.ndim == 4 and stored.shape[1:] == shape:
                current = getattr(self, f"prototypes_{scale}")
                if stored.shape[0] != current.shape[0]:
                    resized = current.new_zeros((stored.shape[0], *shape))
                    setattr(self, f"prototypes_{scale}", resized)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, *args)
        with torch.no_grad():
            self._update_norms()


def _sampled_vectors(feature: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """``count`` feature vectors (rows of C) from distinct locations of each map of a batch."""
    vectors = feature.flatten(2).transpose(1, 2)  # (B, H*W, C)
    chosen = [torch.randperm(vectors.shape[1], generator=generator)[:count] for _ in vectors]
    index = torch.stack(chosen).to(feature.device)
    return torch.gather(vectors, 1, index[..., None].expand(-1, -1, vectors.shape[2])).flatten(0, 1)


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, list | tuple):
        return f"{type(value).__name__} of length {len(value)}"
    return type(value).__name__
