"""Combinators, so a whole training mix is one expression::

    OneOf([Normal(), SeenAnomalyPaste(...), PerlinTexturePaste(...)], weights=[2, 1, 1])

Composite parameters nest their children's: ``OneOf`` records the chosen index,
``Compose``/``SomeOf`` a list, ``RandomApply`` whether it fired.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from anomgen.core import AnomalyTransform, from_dict, random_int, register

__all__ = ["Compose", "Normal", "OneOf", "RandomApply", "SomeOf"]


def _children(transforms: Sequence[AnomalyTransform | dict]) -> list[AnomalyTransform]:
    children = [from_dict(t) if isinstance(t, dict) else t for t in transforms]
    for child in children:
        if not isinstance(child, AnomalyTransform):
            raise ValueError(f"expected anomgen transforms, got {type(child).__name__}")
    if not children:
        raise ValueError("a combinator needs at least one transform")
    return children


@register
@dataclass
class Normal(AnomalyTransform):
    """The normal pass-through: the image unchanged, an empty mask, label 0."""

    makes_anomalies = False

    def sample_params(self, image: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        return {}

    def apply(
        self, image: torch.Tensor, params: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return image.clone(), image.new_zeros((1, *image.shape[1:]))


def _sequential(
    transforms: Sequence[AnomalyTransform],
    image: torch.Tensor,
    chosen: Sequence[tuple[int, dict[str, Any]]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``(index, params)`` steps in order; the mask is the union of the steps' masks."""
    mask = image.new_zeros((1, *image.shape[1:]))
    for index, params in chosen:
        image, step_mask = transforms[index].apply(image, params)
        mask = torch.maximum(mask, step_mask)
    return image, mask


@register
@dataclass
class Compose(AnomalyTransform):
    """Apply every transform in order (e.g. a texture paste then a scratch)."""

    transforms: list[AnomalyTransform]

    def __post_init__(self) -> None:
        self.transforms = _children(self.transforms)
        self.preserves_outside = all(t.preserves_outside for t in self.transforms)

    def sample_params(self, image: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        return {"steps": [t.sample_params(image, generator) for t in self.transforms]}

    def resample_params(
        self, image: torch.Tensor, generator: torch.Generator, params: dict[str, Any]
    ) -> dict[str, Any]:
        steps = zip(self.transforms, params["steps"])
        return {"steps": [t.resample_params(image, generator, p) for t, p in steps]}

    def apply(
        self, image: torch.Tensor, params: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return _sequential(self.transforms, image, list(enumerate(params["steps"])))

    def strategy(self, params: dict[str, Any]) -> str:
        return "+".join(t.strategy(p) for t, p in zip(self.transforms, params["steps"]))

    def expects_anomaly(self, params: dict[str, Any]) -> bool:
        return any(t.expects_anomaly(p) for t, p in zip(self.transforms, params["steps"]))


@register
@dataclass
class OneOf(AnomalyTransform):
    """Apply one transform, chosen with probability proportional to ``weights``."""

    transforms: list[AnomalyTransform]
    weights: list[float] | None = None

    def __post_init__(self) -> None:
        self.transforms = _children(self.transforms)
        if self.weights is None:
            self.weights = [1.0] * len(self.transforms)
        self.weights = [float(w) for w in self.weights]
        if len(self.weights) != len(self.transforms):
            raise ValueError(
                f"got {len(self.weights)} weights for {len(self.transforms)} transforms"
            )
        if min(self.weights) < 0 or sum(self.weights) <= 0:
            raise ValueError(
                f"weights must be non-negative with a positive sum, got {self.weights}"
            )
        self._probabilities = torch.tensor(self.weights, dtype=torch.float64) / sum(self.weights)
        self.preserves_outside = all(t.preserves_outside for t in self.transforms)

    def sample_params(self, image: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        index = int(torch.multinomial(self._probabilities, 1, generator=generator))
        return {"index": index, "params": self.transforms[index].sample_params(image, generator)}

    def resample_params(
        self, image: torch.Tensor, generator: torch.Generator, params: dict[str, Any]
    ) -> dict[str, Any]:
        index = params["index"]
        child = self.transforms[index].resample_params(image, generator, params["params"])
        return {"index": index, "params": child}

    def apply(
        self, image: torch.Tensor, params: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transforms[params["index"]].apply(image, params["params"])

    def apply_batch(
        self, images: torch.Tensor, params: Sequence[dict[str, Any]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Group samples by the chosen transform so each child runs its own batched path."""
        out = torch.empty_like(images)
        masks = images.new_empty((images.shape[0], 1, *images.shape[2:]))
        for index, transform in enumerate(self.transforms):
            members = [i for i, p in enumerate(params) if p["index"] == index]
            if members:
                out[members], masks[members] = transform.apply_batch(
                    images[members], [params[i]["params"] for i in members]
                )
        return out, masks

    def strategy(self, params: dict[str, Any]) -> str:
        return self.transforms[params["index"]].strategy(params["params"])

    def expects_anomaly(self, params: dict[str, Any]) -> bool:
        return self.transforms[params["index"]].expects_anomaly(params["params"])


@register
@dataclass
class SomeOf(AnomalyTransform):
    """Apply between ``n[0]`` and ``n[1]`` distinct transforms, in their listed order."""

    transforms: list[AnomalyTransform]
    n: tuple[int, int] = (1, 2)

    def __post_init__(self) -> None:
        self.transforms = _children(self.transforms)
        low, high = (int(v) for v in self.n)
        if not 0 <= low <= high <= len(self.transforms):
            raise ValueError(
                f"n must satisfy 0 <= min <= max <= {len(self.transforms)}, got {self.n}"
            )
        self.n = (low, high)
        self.preserves_outside = all(t.preserves_outside for t in self.transforms)

    def sample_params(self, image: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        count = random_int(generator, *self.n)
        order = torch.randperm(len(self.transforms), generator=generator)[:count]
        chosen = sorted(int(i) for i in order)
        return {"steps": [[i, self.transforms[i].sample_params(image, generator)] for i in chosen]}

    def resample_params(
        self, image: torch.Tensor, generator: torch.Generator, params: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "steps": [
                [i, self.transforms[i].resample_params(image, generator, p)]
                for i, p in params["steps"]
            ]
        }

    def apply(
        self, image: torch.Tensor, params: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return _sequential(self.transforms, image, [(i, p) for i, p in params["steps"]])

    def strategy(self, params: dict[str, Any]) -> str:
        names = [self.transforms[i].strategy(p) for i, p in params["steps"]]
        return "+".join(names) if names else "Normal"

    def expects_anomaly(self, params: dict[str, Any]) -> bool:
        return any(self.transforms[i].expects_anomaly(p) for i, p in params["steps"])


@register
@dataclass
class RandomApply(AnomalyTransform):
    """Apply ``transform`` with probability ``p``, else pass the image through as normal."""

    transform: AnomalyTransform
    p: float = 0.5

    def __post_init__(self) -> None:
        self.transform = _children([self.transform])[0]
        try:
            p = float(self.p)
        except (TypeError, ValueError):
            raise ValueError(f"p must be a number in [0, 1], got {self.p!r}") from None
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {self.p!r}")
        self.p = p
        self.preserves_outside = self.transform.preserves_outside

    def sample_params(self, image: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        applied = float(torch.rand((), generator=generator)) < self.p
        return {
            "applied": applied,
            "params": self.transform.sample_params(image, generator) if applied else {},
        }

    def resample_params(
        self, image: torch.Tensor, generator: torch.Generator, params: dict[str, Any]
    ) -> dict[str, Any]:
        if not params["applied"]:
            return params
        child = self.transform.resample_params(image, generator, params["params"])
        return {"applied": True, "params": child}

    def apply(
        self, image: torch.Tensor, params: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not params["applied"]:
            return Normal().apply(image, {})
        return self.transform.apply(image, params["params"])

    def apply_batch(
        self, images: torch.Tensor, params: Sequence[dict[str, Any]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The applied samples go through the child's batched path together."""
        out = images.clone()
        masks = images.new_zeros((images.shape[0], 1, *images.shape[2:]))
        applied = [i for i, p in enumerate(params) if p["applied"]]
        if applied:
            out[applied], masks[applied] = self.transform.apply_batch(
                images[applied], [params[i]["params"] for i in applied]
            )
        return out, masks

    def strategy(self, params: dict[str, Any]) -> str:
        return self.transform.strategy(params["params"]) if params["applied"] else "Normal"

    def expects_anomaly(self, params: dict[str, Any]) -> bool:
        return params["applied"] and self.transform.expects_anomaly(params["params"])
