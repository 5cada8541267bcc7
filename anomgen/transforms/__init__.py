"""Every anomgen synthesis strategy, one module each."""

from anomgen.transforms.band import EdgeBandPaste
from anomgen.transforms.compose import Compose, Normal, OneOf, RandomApply, SomeOf
from anomgen.transforms.corruption import LocalCorruption
from anomgen.transforms.crack import Crack
from anomgen.transforms.cutpaste import CutPaste, CutPasteScar
from anomgen.transforms.perlin import PerlinMaskGenerator, PerlinTexturePaste
from anomgen.transforms.poisson import PoissonPatch
from anomgen.transforms.seen import RealAnomalyImage, SeenAnomalyPaste

__all__ = [
    "Compose",
    "Crack",
    "CutPaste",
    "CutPasteScar",
    "EdgeBandPaste",
    "LocalCorruption",
    "Normal",
    "OneOf",
    "PerlinMaskGenerator",
    "PerlinTexturePaste",
    "PoissonPatch",
    "RandomApply",
    "RealAnomalyImage",
    "SeenAnomalyPaste",
    "SomeOf",
]
