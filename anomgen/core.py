"""The sample contract shared by every anomgen transform.

A transform is split in two halves, as in kornia's augmentation classes:

* ``sample_params(image, generator)`` draws every random choice from an explicit
  ``torch.Generator`` and returns them as plain, JSON-able values (ints, floats,
  lists, strings). Large random fields (noise) are stored as integer seeds.
* ``apply(image, params)`` is deterministic: the same image and parameters always
  give the same output, so parameters can be logged and replayed.

Each sample of a batch is seeded on its own (``seeds=[...]``), so a sample's
parameters never depend on which batch it lands in.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

__all__ = [
    "AnomalyTransform",
    "Synthesis",
    "check_int",
    "check_int_range",
    "check_keys",
    "check_names",
    "check_range",
    "check_seed",
    "check_seeds",
    "check_size",
    "derive_seed",
    "finite_number",
    "from_dict",
    "make_generator",
    "random_int",
    "random_uniform",
    "register",
    "registered_transforms",
    "to_tensor_image",
]

_REGISTRY: dict[str, type[AnomalyTransform]] = {}
# A sample is anomalous when some masked pixel changed by more than this in some channel.
_MIN_CHANGE = 1e-6
_MAX_ATTEMPTS = 10
# torch.Generator.manual_seed takes seeds below this.
_SEED_LIMIT = 2**64


def register(cls: type[AnomalyTransform]) -> type[AnomalyTransform]:
    """Class decorator adding a transform to the registry used by ``from_dict``.

    Only dataclass transforms serialise (``to_dict`` reads their fields), and a name stays
    bound to one class: silently replacing a built-in would change what configs build.
    """
    if not (isinstance(cls, type) and issubclass(cls, AnomalyTransform)):
        raise ValueError(f"register takes an AnomalyTransform subclass, got {cls!r}")
    if not dataclasses.is_dataclass(cls):
        raise ValueError(f"{cls.__name__} must be a dataclass (decorate it with @dataclass)")
    known = _REGISTRY.get(cls.__name__)
    if known is not None and known is not cls:
        raise ValueError(
            f"a transform named {cls.__name__!r} is already registered ({known.__module__}); "
            "give yours another name"
        )
    _REGISTRY[cls.__name__] = cls
    return cls


def registered_transforms() -> dict[str, type[AnomalyTransform]]:
    """Every registered transform class by name (for ``anomgen list``)."""
    return dict(sorted(_REGISTRY.items()))


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys, e.g. ``(base_seed, epoch, index)``.

    SeedSequence mixes the keys so that neighbouring indices give unrelated streams. It
    reads them as one list of 32-bit words (a key of 2**32 or more is split, low word
    first), so only key tuples of the same length whose keys are all below 2**32 are sure
    to be told apart. Others can coincide: up to four words, trailing zero keys are ignored
    (``derive_seed(s) == derive_seed(s, 0)``), and ``derive_seed(2**32, 0)`` equals
    ``derive_seed(0, 1)``. Changing that would change every published stream.
    """
    if not all(_is_seed(k) for k in keys):
        raise ValueError(f"seed keys must be ints in [0, 2**64), got {keys}")
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def _is_seed(value: Any) -> bool:
    return (
        isinstance(value, int | np.integer)
        and not isinstance(value, bool)
        and 0 <= int(value) < _SEED_LIMIT
    )


def check_seed(seed: Any, name: str = "seed") -> int:
    """``seed`` as a plain int. A seed is an int in [0, 2**64) (numpy integers too): a float,
    bool or string would otherwise be truncated or parsed into some other sample's stream."""
    if not _is_seed(seed):
        raise ValueError(f"{name} must be an int in [0, 2**64), got {seed!r}")
    return int(seed)


def check_seeds(seeds: Any, n: int | None = None) -> list[int]:
    """``seeds`` as a list of plain ints: a non-empty sequence of seeds, ``n`` of them if given."""
    if (
        isinstance(seeds, str | bytes)
        or not isinstance(seeds, Sequence | np.ndarray)
        or len(seeds) == 0
    ):
        raise ValueError(f"seeds must be a non-empty sequence of ints, got {seeds!r}")
    if n is not None and len(seeds) != n:
        raise ValueError(f"got {len(seeds)} seeds for a batch of {n}")
    return [check_seed(s, f"seeds[{i}]") for i, s in enumerate(seeds)]


def finite_number(name: str, value: Any, low: float = -math.inf, high: float = math.inf) -> float:
    """``value`` as a float, or a ValueError naming it when not finite and in [low, high].
    A string is refused, not parsed: a setting is a number, not text that looks like one."""
    try:
        if isinstance(value, str | bytes):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number) or not low <= number <= high:
        raise ValueError(f"{name} must be a finite number in [{low}, {high}], got {value!r}")
    return number


def check_int(name: str, value: Any, low: float = -math.inf, high: float = math.inf) -> int:
    """``value`` as a plain int in [low, high]. numpy integers count; a bool or a float
    (even 3.0) is an error rather than a silent truncation."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | np.integer)
        or not low <= value <= high
    ):
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` as a plain bool: ``bool("false")`` is True, so strings are refused."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_size(name: str, value: Any) -> tuple[int, int]:
    """An image size as ``(H, W)``: one positive int for a square, or a pair of them."""
    if isinstance(value, str | bytes) or not isinstance(value, int | np.integer | Sequence):
        raise ValueError(f"{name} must be an int or an (H, W) pair of ints, got {value!r}")
    pair = (value, value) if isinstance(value, int | np.integer) else value
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or an (H, W) pair of ints, got {value!r}")
    height, width = (check_int(name, v, 1) for v in pair)
    return height, width


def check_names(
    name: str, value: Any, choices: Sequence[str], distinct: bool = True
) -> tuple[str, ...]:
    """``value`` as a tuple of plain strings among ``choices`` (a list, not one string)."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
        raise ValueError(f"{name} must be a list of names among {tuple(choices)}, got {value!r}")
    names = tuple(str(v) if isinstance(v, str) else v for v in value)
    if any(n not in choices for n in names) or (distinct and len(set(names)) != len(names)):
        kind = "distinct names" if distinct else "names"
        raise ValueError(f"{name} must be {kind} among {tuple(choices)}, got {value!r}")
    return names


def check_keys(name: str, params: Any, keys: Sequence[str]) -> dict[str, Any]:
    """``params`` if it is a dict holding every key in ``keys`` (hand-edited replay input)."""
    if not isinstance(params, dict):
        raise ValueError(f"{name} parameters must be a dict, got {params!r:.80}")
    missing = [k for k in keys if k not in params]
    if missing:
        raise ValueError(f"{name} parameters lack {missing}; got keys {sorted(params, key=str)}")
    return params


def make_generator(seed: int | None) -> torch.Generator:
    """A CPU generator (parameters are tiny; CPU keeps them identical across devices).

    ``seed=None`` seeds it from a draw of torch's global RNG, not from OS entropy: after
    ``torch.manual_seed`` such calls repeat, as torchvision's random transforms do."""
    generator = torch.Generator()
    generator.manual_seed(
        int(torch.randint(0, 2**62, (1,)).item()) if seed is None else check_seed(seed)
    )
    return generator


def random_uniform(generator: torch.Generator, low: float, high: float) -> float:
    """One float in [low, high)."""
    return low + (high - low) * float(torch.rand((), generator=generator))


def random_int(generator: torch.Generator, low: int, high: int) -> int:
    """One int in [low, high] (both inclusive)."""
    return int(torch.randint(int(low), int(high) + 1, (), generator=generator))


@dataclass
class Synthesis:
    """One synthesized sample or batch.

    ``image`` has the type of the input (tensor, numpy HWC uint8 or PIL). ``mask`` is a
    tensor ``(1,H,W)`` / ``(B,1,H,W)`` for tensor input and a float32 numpy ``(H,W)``
    array otherwise, values in [0, 1]. ``meta`` is a dict (a list of dicts for a batch)
    with ``anomalous``, ``strategy`` and ``params``.
    """

    image: Any
    mask: Any
    meta: dict[str, Any] | list[dict[str, Any]]


# --------------------------------------------------------------------------- conversion


@dataclass
class _InputKind:
    kind: str  # "tensor", "numpy" or "pil"
    batched: bool
    dtype: Any = None
    pil_mode: str | None = None
    numpy_channels: int | None = None  # None: the input was (H,W)


def to_tensor_image(image: Any) -> tuple[torch.Tensor, _InputKind]:
    """Validate ``image`` and turn it into a float (B,C,H,W) tensor in [0, 1]."""
    if isinstance(image, Image.Image):
        if image.mode not in ("L", "RGB"):
            raise ValueError(f"PIL image mode {image.mode!r} is not supported; use 'L' or 'RGB'")
        array = np.asarray(image)
        kind = _InputKind("pil", batched=False, pil_mode=image.mode)
        return _numpy_to_tensor(array), kind
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"numpy images must be uint8 HWC, got dtype {image.dtype}")
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
            raise ValueError(f"numpy images must be (H,W), (H,W,1) or (H,W,3), got {image.shape}")
        kind = _InputKind(
            "numpy", batched=False, numpy_channels=None if image.ndim == 2 else image.shape[2]
        )
        return _numpy_to_tensor(image), kind
    if isinstance(image, torch.Tensor):
        if not image.is_floating_point():
            raise ValueError(f"tensor images must be float in [0, 1], got dtype {image.dtype}")
        if image.ndim not in (3, 4) or image.shape[-3] not in (1, 3):
            raise ValueError(
                "tensor images must be (C,H,W) or (B,C,H,W) with C in {1,3}, "
                f"got {tuple(image.shape)}"
            )
        if image.shape[-1] < 2 or image.shape[-2] < 2:
            raise ValueError(f"images must be at least 2x2, got {tuple(image.shape)}")
        if image.ndim == 4 and image.shape[0] == 0:
            raise ValueError(f"the batch is empty: {tuple(image.shape)}")
        low, high = torch.aminmax(image)  # NaN fails both tests; faster than isfinite
        if not (bool(low >= 0) and bool(high <= 1)):
            raise ValueError(
                "tensor images must hold finite values in [0, 1], "
                f"got [{float(low)}, {float(high)}]"
            )
        kind = _InputKind("tensor", image.ndim == 4, image.dtype)
        batch = image if image.ndim == 4 else image.unsqueeze(0)
        return batch.float(), kind
    raise TypeError(f"unsupported image type {type(image).__name__}: use a tensor, numpy or PIL")


def _numpy_to_tensor(array: np.ndarray) -> torch.Tensor:
    if array.ndim == 2:
        array = array[:, :, None]
    if min(array.shape[:2]) < 2:
        raise ValueError(f"images must be at least 2x2, got {array.shape}")
    if not array.flags.writeable or not array.flags.c_contiguous:
        array = np.array(array, copy=True)  # PIL arrays are read-only; torch needs writable
    return torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255.0


def _from_tensor(images: torch.Tensor, masks: torch.Tensor, kind: _InputKind) -> tuple[Any, Any]:
    if kind.kind == "tensor":
        images, masks = images.to(kind.dtype), masks.to(kind.dtype)
        return (images, masks) if kind.batched else (images[0], masks[0])
    array = (images[0].clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    mask = masks[0, 0].float().cpu().numpy()
    if kind.kind == "pil":
        return Image.fromarray(array[:, :, 0] if kind.pil_mode == "L" else array), mask
    if kind.numpy_channels is None:
        array = array[:, :, 0]
    return array, mask


# ------------------------------------------------------------------------ transform base


class AnomalyTransform:
    """Base of every synthesis transform (subclasses are dataclasses).

    Subclasses implement ``sample_params`` and ``apply`` on float ``(C,H,W)`` tensors.
    ``preserves_outside`` promises that pixels where the mask is 0 are untouched.
    """

    preserves_outside: ClassVar[bool] = True
    # Transforms that never make anomalies (the normal pass-through) set this False.
    makes_anomalies: ClassVar[bool] = True
    # The keys of ``params`` that ``apply`` reads, checked by ``replay``.
    param_keys: ClassVar[tuple[str, ...]] = ()

    @property
    def name(self) -> str:
        return type(self).__name__

    # -- to override
    def sample_params(self, image: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        raise NotImplementedError

    def apply(
        self, image: torch.Tensor, params: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(image, mask)``: the changed (C,H,W) image and its (1,H,W) mask.

        Subclasses override ``apply`` or ``apply_batch`` (or both); each defaults to the other.
        """
        images, masks = self.apply_batch(image[None], [params])
        return images[0], masks[0]

    def strategy(self, params: dict[str, Any]) -> str:
        """The name of the leaf strategy that ``params`` used (composites override)."""
        return self.name

    def apply_batch(
        self, images: torch.Tensor, params: Sequence[dict[str, Any]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply per-sample parameters to a (B,C,H,W) batch; vectorised where it pays.

        The default writes each sample's result straight into the output while it is
        still in cache (cheaper than stacking a list afterwards).
        """
        out = torch.empty_like(images)
        masks = images.new_empty((images.shape[0], 1, *images.shape[2:]))
        for i, (image, p) in enumerate(zip(images, params)):
            out[i], masks[i] = self.apply(image, p)
        return out, masks

    def check_params(self, params: Any) -> None:
        """Raise a ValueError naming what hand-edited ``params`` lack or get wrong, before
        ``apply`` fails on it with a bare KeyError (or silently does something else).

        Checks ``param_keys``; subclasses add the values ``apply`` does not check itself.
        """
        check_keys(self.name, params, self.param_keys)

    def expects_anomaly(self, params: dict[str, Any]) -> bool:
        """Whether ``params`` should give an anomaly (False for the normal pass-through)."""
        return self.makes_anomalies

    def resample_params(
        self, image: torch.Tensor, generator: torch.Generator, params: dict[str, Any]
    ) -> dict[str, Any]:
        """Parameters for another try after ``params`` gave no anomaly.

        Leaves draw afresh; combinators keep their choice of child (``OneOf`` its index,
        ``RandomApply`` its coin) and redraw only inside it, so retries never shift a mix's
        proportions towards the strategies that rarely come out empty.
        """
        return self.sample_params(image, generator)

    # -- public API
    def __call__(
        self,
        image: Any,
        *,
        seed: int | None = None,
        seeds: Sequence[int] | None = None,
    ) -> Synthesis:
        """Synthesize from ``image``: ``seed`` for one image, ``seeds`` (one each) for a batch.

        With a batch and only ``seed``, sample ``i`` uses ``derive_seed(seed, i)``. With neither,
        the seed is drawn from torch's global RNG (``torch.manual_seed`` makes it repeat). Masks can
        come out empty (a Perlin threshold above every noise value, say): such a sample is
        drawn again from its own generator, up to ``_MAX_ATTEMPTS`` times, so retries stay
        deterministic and never depend on the rest of the batch.
        """
        batch, kind = to_tensor_image(image)
        seeds = self._resolve_seeds(batch.shape[0], seed, seeds, kind.batched)
        generators = [make_generator(s) for s in seeds]
        params = [self.sample_params(img, g) for img, g in zip(batch, generators)]
        images, masks = self.apply_batch(batch, params)
        flags = self._flags(batch, images, masks, params, kind)
        for _ in range(_MAX_ATTEMPTS - 1):
            retry = [i for i, p in enumerate(params) if self.expects_anomaly(p) and not flags[i]]
            if not retry:
                break
            for i in retry:
                params[i] = self.resample_params(batch[i], generators[i], params[i])
            images[retry], masks[retry] = self.apply_batch(batch[retry], [params[i] for i in retry])
            for i in retry:
                flags[i] = self._flags(
                    batch[i : i + 1], images[i : i + 1], masks[i : i + 1], [params[i]], kind
                )[0]
        return self._finish(images, masks, params, flags, kind)

    def _flags(
        self,
        batch: torch.Tensor,
        images: torch.Tensor,
        masks: torch.Tensor,
        params: Sequence[dict[str, Any]],
        kind: _InputKind,
    ) -> list[bool]:
        """Which samples are really anomalous; a pass-through sample is normal by definition.

        For numpy and PIL input the change must survive rounding to 8 bits, as the output does.
        """
        eight_bit = kind.kind != "tensor"
        return [
            self.expects_anomaly(p) and _is_anomalous(before, after, mask, eight_bit)
            for before, after, mask, p in zip(batch, images, masks, params)
        ]

    def replay(self, image: Any, params: dict[str, Any] | Sequence[dict[str, Any]]) -> Synthesis:
        """Apply logged parameters again (``meta["params"]`` of an earlier call)."""
        batch, kind = to_tensor_image(image)
        plist = [params] if isinstance(params, dict) else list(params)
        if len(plist) != batch.shape[0]:
            raise ValueError(f"got {len(plist)} parameter sets for a batch of {batch.shape[0]}")
        for p in plist:
            if isinstance(p, dict) and {"anomalous", "strategy", "params"} <= set(p):
                raise ValueError(
                    f"replay takes meta['params'], not the whole meta dict (got keys {sorted(p)})"
                )
            self.check_params(p)
        images, masks = self.apply_batch(batch, plist)
        flags = self._flags(batch, images, masks, plist, kind)
        return self._finish(images, masks, plist, flags, kind)

    def _finish(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        params: list[dict[str, Any]],
        flags: list[bool],
        kind: _InputKind,
    ) -> Synthesis:
        metas = []
        for i, (p, anomalous) in enumerate(zip(params, flags)):
            if not anomalous:
                masks[i].zero_()
            metas.append({"anomalous": anomalous, "strategy": self.strategy(p), "params": p})
        out_image, out_mask = _from_tensor(images.clamp_(0, 1), masks, kind)
        return Synthesis(out_image, out_mask, metas if kind.batched else metas[0])

    @staticmethod
    def _resolve_seeds(
        n: int, seed: int | None, seeds: Sequence[int] | None, batched: bool
    ) -> list[int]:
        if seeds is not None:
            if seed is not None:
                raise ValueError("pass either seed or seeds, not both")
            return check_seeds(seeds, n)
        base = int(torch.randint(0, 2**62, (1,)).item()) if seed is None else check_seed(seed)
        return [derive_seed(base, i) for i in range(n)] if batched else [base]

    # -- serialisation
    def to_dict(self) -> dict[str, Any]:
        """A plain dict (YAML-able) that ``from_dict`` turns back into this transform."""
        config: dict[str, Any] = {"type": self.name}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.init:
                config[f.name] = _plain(getattr(self, f.name))
        return config


def _plain(value: Any) -> Any:
    if hasattr(value, "to_dict"):  # a child transform
        return value.to_dict()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):  # e.g. a numpy string, which YAML cannot dump
        return value.item()
    return value


def _is_anomalous(
    before: torch.Tensor, after: torch.Tensor, mask: torch.Tensor, eight_bit: bool
) -> bool:
    """Does the (1,H,W) mask mark a pixel whose value really changed (at 8 bits if asked)?"""
    if eight_bit:  # ``before`` came from 8 bits; ``after`` is rounded like the output
        after = after.clamp(0, 1).mul(255.0).round_().div_(255.0)
    changed = (after - before).abs_().amax(dim=0, keepdim=True) > _MIN_CHANGE
    return bool(changed.logical_and_(mask > 0).any())


def from_dict(config: dict[str, Any]) -> AnomalyTransform:
    """Build a transform (tree) from ``to_dict`` output."""
    if not isinstance(config, dict) or "type" not in config:
        raise ValueError(f"a transform config needs a 'type' key, got {config!r}")
    name = config["type"]
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown transform {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    cls = _REGISTRY[name]
    names = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = set(config) - names - {"type"}
    if unknown:  # sorted as text: YAML keys may be ints too
        raise ValueError(
            f"{name} has no parameter(s) {sorted(unknown, key=str)}; it takes {sorted(names)}"
        )
    required = {
        f.name
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = required - set(config)
    if missing:
        raise ValueError(
            f"{name} needs parameter(s) {sorted(missing)}; got {sorted(config, key=str)}"
        )
    kwargs = {k: v for k, v in config.items() if k != "type"}
    return cls.from_config(kwargs) if hasattr(cls, "from_config") else cls(**kwargs)


def check_range(name: str, value: Sequence[float], low: float, high: float) -> tuple[float, float]:
    """Validate a ``(min, max)`` parameter range inside [low, high] (numbers, not strings)."""
    try:
        if isinstance(value, str | bytes) or any(isinstance(v, str | bytes) for v in value):
            raise TypeError
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (min, max) pair of numbers, got {value!r}") from None
    if any(isinstance(v, bool) for v in value) or not (low <= lo <= hi <= high):
        raise ValueError(f"{name} must satisfy {low} <= min <= max <= {high}, got {value!r}")
    return lo, hi


def check_int_range(name: str, value: Sequence[int], low: int, high: int) -> tuple[int, int]:
    """A ``(min, max)`` range of integers inside [low, high]; a float, even 2.0, is refused
    like any integer setting's."""
    lo, hi = check_range(name, value, low, high)
    if not all(isinstance(v, int | np.integer) for v in value):
        raise ValueError(f"{name} must hold integers, got {value!r}")
    return int(lo), int(hi)
