"""Named training mixes from the literature, built from anomgen transforms."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from anomgen.core import AnomalyTransform
from anomgen.transforms.compose import Normal, OneOf, RandomApply
from anomgen.transforms.cutpaste import CutPaste, CutPasteScar
from anomgen.transforms.perlin import PerlinTexturePaste
from anomgen.transforms.seen import SeenAnomalyPaste

__all__ = ["PRESETS", "build_preset"]

PathLike = str | Path | None


def draem(textures: PathLike = None, **_: PathLike) -> AnomalyTransform:
    """DRAEM: half the samples normal, half a Perlin region filled with an augmented texture."""
    return RandomApply(PerlinTexturePaste(textures=textures), p=0.5)


def cutpaste(**_: PathLike) -> AnomalyTransform:
    """CutPaste's 3-way mix: normal, CutPaste and CutPaste-scar in equal shares."""
    return OneOf([Normal(), CutPaste(), CutPasteScar()])


def prn(
    anomalies: PathLike = None, masks: PathLike = None, textures: PathLike = None, **_: PathLike
) -> AnomalyTransform:
    """PRN's mix: 50 % normal, 25 % seen-anomaly extension, 25 % simulated anomalies.

    Simulation is DRAEM's texture pasting or CutPaste-scar in equal shares.
    """
    if anomalies is None:
        raise ValueError("the prn preset needs real anomalies (anomalies=DIR / --anomalies DIR)")
    simulated = OneOf([PerlinTexturePaste(textures=textures), CutPasteScar()])
    return OneOf(
        [Normal(), SeenAnomalyPaste(anomalies=anomalies, masks=masks), simulated],
        weights=[2, 1, 1],
    )


PRESETS: dict[str, Callable[..., AnomalyTransform]] = {
    "draem": draem,
    "cutpaste": cutpaste,
    "prn": prn,
}


def build_preset(
    name: str, *, textures: PathLike = None, anomalies: PathLike = None, masks: PathLike = None
) -> AnomalyTransform:
    """Build preset ``name`` with the given data folders."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name](textures=textures, anomalies=anomalies, masks=masks)
