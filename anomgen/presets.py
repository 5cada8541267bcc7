"""Named training mixes from the literature, built from anomgen transforms."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from anomgen.core import AnomalyTransform
from anomgen.transforms.compose import Normal, OneOf, RandomApply
from anomgen.transforms.cutpaste import CutPaste, CutPasteScar
from anomgen.transforms.perlin import PerlinTexturePaste
from anomgen.transforms.seen import SeenAnomalyPaste

__all__ = ["PRESETS", "build_preset"]

PathLike = str | Path | None


def draem(textures: PathLike = None) -> AnomalyTransform:
    """DRAEM: half the samples normal, half a Perlin region filled with an augmented texture."""
    return RandomApply(PerlinTexturePaste(textures=textures), p=0.5)


def cutpaste() -> AnomalyTransform:
    """CutPaste's 3-way mix: normal, CutPaste and CutPaste-scar in equal shares."""
    return OneOf([Normal(), CutPaste(), CutPasteScar()])


def prn(
    anomalies: PathLike = None, masks: PathLike = None, textures: PathLike = None
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
    """Build preset ``name`` with the given data folders; a folder it does not use is an error
    (it would otherwise be ignored without a word)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    build = PRESETS[name]
    folders = {"textures": textures, "anomalies": anomalies, "masks": masks}
    takes = inspect.signature(build).parameters
    unused = [key for key, value in folders.items() if value is not None and key not in takes]
    if unused:
        accepted = ", ".join(takes) or "no folders"
        raise ValueError(f"the {name} preset does not use {' or '.join(unused)} (takes {accepted})")
    return build(**{key: value for key, value in folders.items() if key in takes})
