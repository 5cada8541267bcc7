"""Combinators, so a whole training mix is one expression::

    OneOf([Normal(), SeenAnomalyPaste(...), PerlinTexturePaste(...)], weights=[2, 1, 1])

Composite parameters nest their children's: ``OneOf`` records the chosen index,
``Compose``/``SomeOf`` a list, ``RandomApply`` whether it fired.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from anomgen.core import (
    AnomalyTransform,
    check_bool,
    check_int,
    check_int_range,
    check_keys,
    finite_number,
    from_dict,
    random_int,
    register,
)

__all__ = ["Compose", "Normal", "OneOf", "RandomApply", "SomeOf"]


def _children(
    transforms: Sequence[AnomalyTransform | dict], name: str = "transforms"
) -> list[AnomalyTransform]:
    if isinstance(transforms, str | bytes) or not isinstance(transforms, Sequence):
        raise ValueError(f"{name} must be a list of transforms, got {transforms!r:.80}")
    children = [from_dict(t) if isinstance(t, dict) else t for t in transforms]
    for child in children:
        if not isinstance(child, AnomalyTransform):
            raise ValueError(
                f"{name} must hold anomgen transforms or their dicts, got {type(child).__name__}"
            )
    if not children:
        raise ValueError("a combinator needs at least one transform")
    return children


def _steps(name: str, params: dict[str, Any], count: int | None = None) -> list:
    """``params["steps"]`` as a list (of ``count`` items if given), checked for replay."""
    steps = check_keys(name, params, ("steps",))["steps"]
    if not isinstance(steps, list) or (count is not None and len(steps) != count):
        wanted = "a list" if count is None else f"a list of {count}"
        raise ValueError(f"{name} parameters' steps must be {wanted}, got {steps!r:.80}")
    return steps


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

    def check_params(self, params: Any) -> None:
        for transform, step in zip(
            self.transforms, _steps(self.name, params, len(self.transforms))
        ):
            transform.check_params(step)

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
        if isinstance(self.weights, str | bytes) or not isinstance(
            self.weights, Sequence | np.ndarray | torch.Tensor
        ):
            raise ValueError(f"weights must be a list of numbers, got {self.weights!r:.80}")
        self.weights = [finite_number("weights", w, 0.0) for w in self.weights]
        if len(self.weights) != len(self.transforms):
            raise ValueError(
                f"got {len(self.weights)} weights for {len(self.transforms)} transforms"
            )
        if not 0 < sum(self.weights) < math.inf:
            raise ValueError(f"weights must have a positive, finite sum, got {self.weights}")
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

    def check_params(self, params: Any) -> None:
        check_keys(self.name, params, ("index", "params"))
        index = check_int("index", params["index"], 0, len(self.transforms) - 1)
        self.transforms[index].check_params(params["params"])

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
        self.n = check_int_range("n", self.n, 0, len(self.transforms))
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

    def check_params(self, params: Any) -> None:
        last = -1
        for step in _steps(self.name, params):
            if not isinstance(step, list | tuple) or len(step) != 2:
                raise ValueError(f"each SomeOf step must be [index, params], got {step!r:.80}")
            # sample_params lists distinct indices in increasing order.
            last = check_int("step index", step[0], last + 1, len(self.transforms) - 1)
            self.transforms[last].check_params(step[1])

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
        self.transform = _children([self.transform], "transform")[0]
        self.p = finite_number("p", self.p, 0.0, 1.0)
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

    def check_params(self, params: Any) -> None:
        check_keys(self.name, params, ("applied", "params"))
        if check_bool("applied", params["applied"]):
            self.transform.check_params(params["params"])

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
