"""anomgen: composable anomaly-synthesis transforms for anomaly detection training.

Every transform maps a normal image (torch (C,H,W)/(B,C,H,W) float in [0, 1], numpy
HWC uint8 or PIL) to a ``Synthesis`` of (image, mask, meta), with parameters sampled
from an explicit seed and applied deterministically.
"""

from anomgen.core import AnomalyTransform, Synthesis, derive_seed, from_dict, register
from anomgen.dataset import SynthesisDataset
from anomgen.io import AnomalyPool, TexturePool, list_images, read_image, read_mask
from anomgen.presets import PRESETS, build_preset
from anomgen.transforms import (
    Compose,
    Crack,
    CutPaste,
    CutPasteScar,
    EdgeBandPaste,
    LocalCorruption,
    Normal,
    OneOf,
    PerlinMaskGenerator,
    PerlinTexturePaste,
    PoissonPatch,
    RandomApply,
    RealAnomalyImage,
    SeenAnomalyPaste,
    SomeOf,
)

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "AnomalyPool",
    "AnomalyTransform",
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
    "SynthesisDataset",
    "Synthesis",
    "TexturePool",
    "build_preset",
    "derive_seed",
    "from_dict",
    "list_images",
    "read_image",
    "read_mask",
    "register",
]
