"""The Prototypical Residual Network (PRN; Zhang, Wu, Wang, Chen, Jiang, CVPR 2023, 2212.02031).

Data flow (Fig. 3 of the paper)::

    image -> frozen backbone -> features at strides 4, 8, 16, 32
    strides 4/8/16: residual = (feature - nearest normal prototype) ** 2      [prototypes.py]
    features and residuals -> Multi-scale Fusion (one block each)
    per scale: concat(fused feature, fused residual) -> Multi-size Self-Attention
    -> second Multi-scale Fusion -> U-Net decoder (stride 32 features at the bottom,
    fused scales as skips) -> one-channel anomaly logit map at the input resolution

Widths are chosen so the head costs no more than a frozen EfficientNet-Lite0 at 256x256: the
fusion brings every scale to a modest width with 1x1 convolutions applied at the coarser of the
two resolutions involved plus a depthwise 3x3 one, and the decoder narrows towards full
resolution.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prn_model.backbones import FEATURE_STRIDES, check_unit_range, create_backbone
from prn_model.data import resize_image
from prn_model.memory_bank import PatchMemoryBank, patch_features
from prn_model.prototypes import MATCHING_MODES, PrototypeBank

__all__ = [
    "PRN",
    "MultiScaleFeatureFusion",
    "MultiSizeSelfAttention",
    "PRNConfig",
    "UNetDecoder",
    "normalise_intensity",
    "valid_patch_divisors",
]

# Initial probability of "anomalous" for every pixel (focal-loss prior, Lin et al. 2017): most
# pixels are normal, and starting near 0.01 keeps the first focal-loss steps from being dominated
# by the abundant easy negatives.
_PRIOR_PROBABILITY = 0.01
INTENSITY_NORMALISATIONS = ("none", "image")
# Target grey-level statistics of intensity_normalisation="image": mid-grey, and a contrast
# that leaves four standard deviations either side inside the backbones' [0, 1] input range.
_TARGET_MEAN, _TARGET_STD = 0.5, 0.125
# Floor on an image's standard deviation: a flat image is only shifted, not blown up.
_MIN_STD = 1e-3


def normalise_intensity(images: Tensor) -> Tensor:
    """Each image (B, C, H, W) in [0, 1] shifted and scaled to grey-level mean 0.5 and standard
    deviation 0.125 over all its channels and pixels (colour ratios are kept), then clipped to
    [0, 1]; flat images are only shifted. Removes exposure and gain differences that are not
    defects."""
    if not isinstance(images, Tensor) or images.ndim != 4:  # else it broadcasts to 4-D
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {got}")
    flat = images.flatten(1)
    mean = flat.mean(dim=1).view(-1, 1, 1, 1)
    std = flat.std(dim=1).clamp_min(_MIN_STD).view(-1, 1, 1, 1)
    return ((images - mean) / std * _TARGET_STD + _TARGET_MEAN).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------- configuration


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _positive_ints(name: str, value: Any, length: int | None = None) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"{name} must be a non-empty list of positive ints, got {value!r}")
    if length is not None and len(value) != length:
        raise ValueError(f"{name} must hold exactly {length} values, got {value!r}")
    return tuple(_positive_int(name, v) for v in value)


def unknown_fields(values: Mapping[str, Any], cls: type) -> list[str]:
    """The keys of ``values`` that are no field of dataclass ``cls``, sorted (typos, mostly)."""
    return sorted(set(values) - {f.name for f in dataclasses.fields(cls)})


@dataclass
class PRNConfig:
    """Hyper-parameters of PRN; plain types only, so ``to_dict()`` is YAML-able.

    backbone: registry name (see ``prn_model.backbones``); used when PRN builds its own backbone.
    image_size: side of the square network input; a multiple of 32 (the deepest stride).
    prototype_ratio: prototypes per scale = max(1, round(ratio * n_normal)), halves rounded
        up; PRN uses about 10 % of the normal images.
    n_prototype_scales: how many of the strides 4, 8, 16 get prototypes and residuals (1-3).
    attention_divisors: MSSA patch sizes are (H / d, W / d) for each divisor d that divides the
        map and leaves patches of at least 1 px; 1 is the whole map as a single token.
    attention_channels: channels of the 1x1 Q/K/V projections in each MSSA patch size.
    fusion_channels: width of the strides 4, 8, 16 after each Multi-scale Fusion.
    decoder_channels: decoder width at strides 32, 16, 8, 4, 2 (stride 1 is the logit).
    top_k: image score = mean of the k largest anomaly-map values. A mean of 100 pixels
        (0.15 % of a 256x256 map by default) is less noisy than the maximum yet still
        responds to small defects, which a whole-image mean would dilute (our choice).
    kmeans_max_iter: cap on Lloyd iterations when fitting the prototypes.
    prototype_matching: "image" (the paper: each map is compared with its nearest whole normal
        feature map) or "patch" (ours, for unaligned textures: each location is compared with
        its nearest of ``patch_prototypes`` normal feature vectors); see prn_model.prototypes.
    patch_prototypes: prototypes per scale with patch matching.
    use_residuals: False feeds zeros instead of the prototype residuals (the "prototypes off"
        ablation of docs/results.md); the architecture and its cost stay the same.
    num_prototypes: prototypes per scale; filled in by ``PRN.fit_prototypes`` so a model built
        from a saved config has buffers of the checkpoint's shapes.
    memory_bank_size: 0 for PRN alone (the paper); else the number of normal patch vectors of
        a PatchCore-style memory bank whose distance map is fused with PRN's (our addition,
        see prn_model.memory_bank; filled by ``PRN.fit_memory_bank`` after training).
    memory_bank_weight: weight of the memory bank's standardised map in the fusion (0.5: equal).
    intensity_normalisation: "none" (the paper) or "image" (ours): every image's grey levels are
        shifted and scaled to mean 0.5 and standard deviation 0.125 before the backbone
        (``normalise_intensity``), so a change of exposure or gain between tiles is not itself
        an anomaly. MTD's mean grey level varies 2.3x between its 10th and 90th percentile tile
        in every class, and without it brighter tiles score higher (docs/results.md).
    """

    backbone: str = "efficientnet_lite0"
    image_size: int = 256
    prototype_ratio: float = 0.1
    n_prototype_scales: int = 3
    attention_divisors: tuple[int, ...] = (1, 2, 4, 8)
    attention_channels: int = 8
    fusion_channels: tuple[int, ...] = (32, 48, 64)
    decoder_channels: tuple[int, ...] = (64, 64, 48, 32, 8)
    top_k: int = 100
    kmeans_max_iter: int = 100
    prototype_matching: str = "image"
    patch_prototypes: int = 512
    use_residuals: bool = True
    num_prototypes: tuple[int, ...] | None = field(default=None)
    memory_bank_size: int = 0
    memory_bank_weight: float = 0.5
    intensity_normalisation: str = "none"

    def __post_init__(self) -> None:
        if not isinstance(self.backbone, str) or not self.backbone:
            raise ValueError(f"backbone must be a non-empty string, got {self.backbone!r}")
        _positive_int("image_size", self.image_size)
        if self.image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32, got {self.image_size}")
        ratio = self.prototype_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 < ratio <= 1:
            raise ValueError(f"prototype_ratio must be in (0, 1], got {ratio!r}")
        self.prototype_ratio = float(ratio)
        scales = self.n_prototype_scales
        if isinstance(scales, bool) or not isinstance(scales, int) or scales not in (1, 2, 3):
            raise ValueError(f"n_prototype_scales must be 1, 2 or 3, got {scales!r}")
        self.attention_divisors = _positive_ints("attention_divisors", self.attention_divisors)
        _positive_int("attention_channels", self.attention_channels)
        self.fusion_channels = _positive_ints("fusion_channels", self.fusion_channels, 3)
        self.decoder_channels = _positive_ints("decoder_channels", self.decoder_channels, 5)
        _positive_int("top_k", self.top_k)
        _positive_int("kmeans_max_iter", self.kmeans_max_iter)
        if self.prototype_matching not in MATCHING_MODES:
            raise ValueError(
                f"prototype_matching must be one of {MATCHING_MODES}, "
                f"got {self.prototype_matching!r}"
            )
        _positive_int("patch_prototypes", self.patch_prototypes)
        if not isinstance(self.use_residuals, bool):  # a string such as 'no' would be truthy
            raise ValueError(f"use_residuals must be True or False, got {self.use_residuals!r}")
        size = self.memory_bank_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"memory_bank_size must be an int >= 0, got {size!r}")
        weight = self.memory_bank_weight
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 1:
            raise ValueError(f"memory_bank_weight must be in [0, 1], got {weight!r}")
        self.memory_bank_weight = float(weight)
        if self.intensity_normalisation not in INTENSITY_NORMALISATIONS:
            raise ValueError(
                f"intensity_normalisation must be one of {INTENSITY_NORMALISATIONS}, "
                f"got {self.intensity_normalisation!r}"
            )
        if self.num_prototypes is not None:
            self.num_prototypes = _positive_ints(
                "num_prototypes", self.num_prototypes, self.n_prototype_scales
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples become lists) for YAML/JSON."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PRNConfig:
        """Inverse of ``to_dict``; unknown keys are an error (they are usually typos)."""
        if not isinstance(values, Mapping):
            raise ValueError(f"config must be a mapping, got {type(values).__name__}")
        unknown = unknown_fields(values, cls)
        if unknown:
            known = sorted(f.name for f in dataclasses.fields(cls))
            raise ValueError(f"unknown PRNConfig keys {unknown}; known keys: {known}")
        return cls(**values)


# ----------------------------------------------------------------------------- building blocks


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Average-pool when shrinking (keeps all evidence), bilinear when enlarging."""
    size = tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class MultiScaleFeatureFusion(nn.Module):
    """PRN Multi-scale Fusion block (MSF, Sec. 3.3, Fig. 3).

    Every target scale receives all input scales resized to its size (bilinear up, average-pool
    down), concatenated and mixed by a depthwise-separable conv-BN-ReLU: a 1x1 convolution mixes
    the channels, a depthwise 3x3 one adds spatial context, then BatchNorm and ReLU. Each input
    is batch-normalised first, so sources of very different magnitude (shallow vs deep
    features, features vs squared residuals) start on an equal footing.

    The 1x1 convolution over the concatenation is computed as a sum of one 1x1 convolution per
    source (``mixing[target][source]``), each applied at the coarser of the two resolutions:
    resizing and a bias-free 1x1 convolution are both linear per pixel/channel, so they commute
    and the result is the same function without materialising the wide upsampled
    concatenation, which saves time and memory at stride 4.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: Sequence[int]) -> None:
        super().__init__()
        self.in_channels = _positive_ints("in_channels", list(in_channels))
        self.out_channels = _positive_ints("out_channels", list(out_channels))
        self.input_norms = nn.ModuleList(nn.BatchNorm2d(c) for c in self.in_channels)
        self.mixing = nn.ModuleList(
            nn.ModuleList(
                nn.Conv2d(channels, width, 1, bias=False) for channels in self.in_channels
            )
            for width in self.out_channels
        )
        self.post = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            )
            for width in self.out_channels
        )

    def forward(
        self, inputs: Sequence[Tensor], target_sizes: Sequence[Sequence[int]] | None = None
    ) -> list[Tensor]:
        """Fuse ``inputs`` (one map per input scale) into one map per target size.

        ``target_sizes`` defaults to the inputs' own sizes (then there must be as many inputs
        as outputs); give it to fuse fewer sources into more scales.
        """
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} input maps, got {len(inputs)}")
        for index, (x, channels) in enumerate(zip(inputs, self.in_channels)):
            if x.ndim != 4 or x.shape[1] != channels:
                raise ValueError(
                    f"input {index}: expected (B, {channels}, H, W), got {tuple(x.shape)}"
                )
        if target_sizes is None:
            target_sizes = [x.shape[-2:] for x in inputs]
        if len(target_sizes) != len(self.out_channels):
            raise ValueError(
                f"expected {len(self.out_channels)} target sizes, got {len(target_sizes)}"
            )
        inputs = [norm(x) for norm, x in zip(self.input_norms, inputs)]
        outputs = []
        for convs, post, size in zip(self.mixing, self.post, target_sizes):
            mixed = sum(
                conv(_resize(x, size))
                if x.shape[-2:].numel() > math.prod(size)
                else _resize(conv(x), size)
                for conv, x in zip(convs, inputs)
            )
            outputs.append(post(mixed))
        return outputs


def valid_patch_divisors(map_size: Sequence[int], divisors: Sequence[int]) -> tuple[int, ...]:
    """Divisors d for which a (H, W) map splits into d x d patches of (H/d, W/d) >= 1 px."""
    divisors = _positive_ints("divisors", divisors)
    height, width = map_size
    return tuple(
        d
        for d in dict.fromkeys(divisors)
        if d <= min(height, width) and not height % d and not width % d
    )


def _to_patch_tokens(x: Tensor, divisor: int) -> Tensor:
    """(B, C, H, W) -> (B, d*d, H/d * W/d * C): one token per non-overlapping patch.

    Patches are numbered row by row; a token lists its pixels row by row with all channels of a
    pixel together, which is a single copy from the channels-last layout the head runs in.
    """
    batch, channels, height, width = x.shape
    d = divisor
    pixels = x.permute(0, 2, 3, 1).reshape(batch, d, height // d, d, width // d, channels)
    return pixels.permute(0, 1, 3, 2, 4, 5).reshape(batch, d * d, -1)


def _from_patch_tokens(
    tokens: Tensor, divisor: int, channels: int, height: int, width: int
) -> Tensor:
    """Inverse of ``_to_patch_tokens``; the result is channels-last in memory."""
    batch, d = tokens.shape[0], divisor
    patches = tokens.reshape(batch, d, d, height // d, width // d, channels)
    pixels = patches.permute(0, 1, 3, 2, 4, 5).reshape(batch, height, width, channels)
    return pixels.permute(0, 3, 1, 2)


class MultiSizeSelfAttention(nn.Module):
    """PRN Multi-size Self-Attention (MSSA, Sec. 3.3), for one scale of a fixed map size.

    The map is split into non-overlapping patches of several sizes (H/d x W/d for each valid
    divisor d). For each size, 1x1 convolutions reduce the channels to Q, K, V, every patch
    flattened (channels x patch pixels) is one token, and the patches attend to each other. The
    outputs of all sizes are concatenated, merged by a 1x1 conv-BN and added to the input
    (residual), so anomalies of different extents are compared with context of matching size.

    With d = 1 the whole map is a single token that can only attend to itself, so that branch
    is just its value projection (no Q/K weights that could never receive a gradient). The
    Q/K/V convolutions of all sizes run as one convolution and are split afterwards.
    """

    def __init__(
        self,
        channels: int,
        map_size: Sequence[int],
        divisors: Sequence[int] = (1, 2, 4, 8),
        attention_channels: int = 8,
    ) -> None:
        super().__init__()
        _positive_int("channels", channels)
        self.attention_channels = _positive_int("attention_channels", attention_channels)
        self.map_size = tuple(_positive_ints("map_size", list(map_size), 2))
        self.divisors = valid_patch_divisors(self.map_size, _positive_ints("divisors", divisors))
        if not self.divisors:
            raise ValueError(f"no divisor in {tuple(divisors)} tiles a {self.map_size} map")
        self.projection_channels = [
            attention_channels * (1 if d == 1 else 3) for d in self.divisors
        ]
        self.qkv = nn.Conv2d(channels, sum(self.projection_channels), 1)
        self.merge = nn.Sequential(
            nn.Conv2d(len(self.divisors) * attention_channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or tuple(x.shape[-2:]) != self.map_size:
            raise ValueError(f"expected maps (B, C, *{self.map_size}), got {tuple(x.shape)}")
        height, width = self.map_size
        outputs = []
        for projection, d in zip(self.qkv(x).split(self.projection_channels, dim=1), self.divisors):
            if d == 1:
                outputs.append(projection)
                continue
            query, key, value = (_to_patch_tokens(t, d) for t in projection.chunk(3, dim=1))
            attended = F.scaled_dot_product_attention(query, key, value)  # scale 1/sqrt(dim)
            outputs.append(_from_patch_tokens(attended, d, self.attention_channels, height, width))
        return x + self.merge(torch.cat(outputs, dim=1))


class UNetDecoder(nn.Module):
    """PRN decoder (Sec. 3.3): U-Net-like upsampling path producing the anomaly logit map.

    The stride-32 backbone features (no prototypes at that scale) enter at the bottom through a
    1x1 conv-BN-ReLU; each stage upsamples x2, concatenates the fused map of that scale (16, 8,
    4) and applies a 3x3 conv-BN-ReLU; a narrow 3x3 conv-BN-ReLU at stride 2 and a 3x3
    convolution to one channel at stride 1 give the logits. Layers at full resolution are the
    most expensive per channel (16 input channels cost ~4 ms there on 2 CPU threads, 8 under
    1 ms), so the last width should stay small.
    """

    def __init__(
        self, bottom_channels: int, skip_channels: Sequence[int], channels: Sequence[int]
    ) -> None:
        super().__init__()
        skips = _positive_ints("skip_channels", list(skip_channels), 3)  # strides 4, 8, 16
        widths = _positive_ints("channels", list(channels), 5)  # strides 32, 16, 8, 4, 2
        self.bottom = _conv_bn_relu(_positive_int("bottom_channels", bottom_channels), widths[0], 1)
        self.skip_stages = nn.ModuleList(
            _conv_bn_relu(widths[i] + skip, widths[i + 1]) for i, skip in enumerate(reversed(skips))
        )
        self.half_resolution = _conv_bn_relu(widths[3], widths[4])
        self.logit = nn.Conv2d(widths[4], 1, 3, padding=1)
        nn.init.constant_(self.logit.bias, -math.log((1 - _PRIOR_PROBABILITY) / _PRIOR_PROBABILITY))

    def forward(
        self, bottom: Tensor, skips: Sequence[Tensor], output_size: Sequence[int]
    ) -> Tensor:
        """``skips`` are the fused maps at strides 4, 8, 16; returns (B, 1, *output_size)."""
        x = self.bottom(bottom)
        for stage, skip in zip(self.skip_stages, reversed(skips)):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = stage(torch.cat([x, skip], dim=1))
        height, width = output_size
        half_size = (math.ceil(height / 2), math.ceil(width / 2))
        x = self.half_resolution(
            F.interpolate(x, size=half_size, mode="bilinear", align_corners=False)
        )
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
        return self.logit(x)


# ----------------------------------------------------------------------------- the model


def _check_images(images: Any, name: str = "images") -> None:
    """(B, C, H, W) float tensor, C in {1, 3}, finite values in [0, 1]."""
    if not isinstance(images, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.numel() == 0:
        raise ValueError(
            f"{name} must have shape (B, C, H, W) with C = 1 or 3 and no empty dimension, "
            f"got {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise ValueError(f"{name} must be a float tensor in [0, 1], got dtype {images.dtype}")
    check_unit_range(images, name)


def _sync_config_after_load(module: PRN, _incompatible_keys: Any) -> None:
    """Load hook (module-level so the model stays picklable): record the loaded K per scale."""
    module._sync_config()


class PRN(nn.Module):
    """Prototypical Residual Network: frozen backbone + prototypes + trainable PRN head.

    ``forward`` returns anomaly *logits* (B, 1, H, W) for images at ``config.image_size``;
    ``predict`` handles images of any size. The backbone stays in eval mode (its BatchNorm
    statistics never change) even when the model is put in training mode, and frozen unless
    ``unfreeze_encoder`` hands its deepest blocks to the optimizer.
    """

    def __init__(
        self,
        config: PRNConfig,
        backbone: nn.Module | None = None,
        pretrained: bool = True,
        weights_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(config, PRNConfig):
            raise ValueError(f"config must be a PRNConfig, got {type(config).__name__}")
        self.config = dataclasses.replace(config)
        if backbone is not None and weights_path is not None:  # they would be ignored
            raise ValueError(
                f"weights_path {str(weights_path)!r} is for PRN's own backbone; load the weights "
                "into the backbone given instead"
            )
        if backbone is None:
            backbone = create_backbone(
                config.backbone, pretrained=pretrained, weights_path=weights_path
            )
        if not isinstance(backbone, nn.Module) or len(getattr(backbone, "channels", ())) != 4:
            raise ValueError("backbone must be an nn.Module with `channels` for 4 feature scales")
        backbone.requires_grad_(False)
        self.backbone = backbone.eval()

        feature_shapes = self._probe_feature_shapes()
        n_protos = config.n_prototype_scales
        self.prototypes = PrototypeBank(
            feature_shapes[:n_protos], config.num_prototypes, matching=config.prototype_matching
        )
        sizes = [shape[1:] for shape in feature_shapes[:3]]
        widths = config.fusion_channels
        channels = [shape[0] for shape in feature_shapes]
        self.feature_fusion = MultiScaleFeatureFusion(channels[:3], widths)
        self.residual_fusion = MultiScaleFeatureFusion(channels[:n_protos], widths)
        self.attention = nn.ModuleList(
            MultiSizeSelfAttention(
                2 * width, size, config.attention_divisors, config.attention_channels
            )
            for width, size in zip(widths, sizes)
        )
        self.second_fusion = MultiScaleFeatureFusion([2 * w for w in widths], widths)
        self.decoder = UNetDecoder(feature_shapes[3][0], widths, config.decoder_channels)
        self.memory_bank = (
            PatchMemoryBank(
                channels[1] + channels[2],
                config.memory_bank_size,
                config.image_size,
                config.memory_bank_weight,
            )
            if config.memory_bank_size
            else None
        )
        # Channels of the training images (1 grayscale, 3 colour), set by the recipe and by
        # ``load_model``: ``predict`` then refuses colour input to a grayscale model, whose
        # scores on it would be meaningless. None: unknown, anything is accepted.
        self.input_channels: int | None = None
        self.register_load_state_dict_post_hook(_sync_config_after_load)

    @property
    def grayscale_input(self) -> bool | None:
        """``load_image``'s ``grayscale`` for this model's images: True or False when it was
        trained on grey or colour ones, None (each file's own) when that is unknown."""
        return {1: True, 3: False}.get(self.input_channels)  # type: ignore[arg-type]

    def _probe_feature_shapes(self) -> list[tuple[int, int, int]]:
        """Run the backbone once on a blank image to learn the (C, H, W) of its 4 maps."""
        size = self.config.image_size
        parameter = next(self.backbone.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        with torch.no_grad():
            features = self.backbone(torch.zeros(1, 3, size, size, device=device))
        if not isinstance(features, list | tuple) or len(features) != 4:
            raise ValueError("backbone must return a list of 4 feature maps")
        shapes = [tuple(f.shape[1:]) for f in features]
        if [s[0] for s in shapes] != list(self.backbone.channels):
            raise ValueError(
                f"backbone.channels {self.backbone.channels} disagree with its outputs {shapes}"
            )
        return shapes  # type: ignore[return-value]

    def _sync_config(self) -> None:
        fitted = self.prototypes.is_fitted
        counts = self.prototypes.num_prototypes if fitted else None
        self.config = dataclasses.replace(self.config, num_prototypes=counts)

    def train(self, mode: bool = True) -> PRN:
        """Set the head's mode; the frozen backbone always stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    @property
    def device(self) -> torch.device:
        return self.prototypes.fitted.device

    def _check_input(self, images: Any) -> None:
        _check_images(images)
        size = self.config.image_size
        if tuple(images.shape[-2:]) != (size, size):
            raise ValueError(
                f"images must be {size}x{size} (config.image_size), got "
                f"{tuple(images.shape[-2:])}; use predict() for other sizes"
            )

    def unfreeze_encoder(self, from_stride: int) -> list[nn.Parameter]:
        """Make the encoder trainable from the map at ``from_stride`` (8, 16 or 32) on; returns
        those parameters for the optimizer. BatchNorm statistics stay frozen.

        PRN's encoder is frozen; training its deepest blocks too adapts the features to the
        data (docs/results.md). Maps at ``from_stride`` and deeper change, so prototypes of
        those scales must be refitted as training goes (``prn_model.train`` does).
        """
        strides = FEATURE_STRIDES[1:]
        if from_stride not in strides:
            raise ValueError(f"from_stride must be one of {strides}, got {from_stride!r}")
        blocks_from = getattr(self.backbone, "blocks_from", None)
        if not callable(blocks_from):
            raise ValueError("this backbone has no blocks_from(stride): it cannot be fine-tuned")
        parameters = [p for block in blocks_from(from_stride) for p in block.parameters()]
        for parameter in parameters:
            parameter.requires_grad_(True)
        return parameters

    def freeze_encoder(self) -> None:
        """Undo ``unfreeze_encoder``: no encoder parameter takes gradients."""
        self.backbone.requires_grad_(False)

    @property
    def encoder_trainable(self) -> bool:
        """Whether any encoder parameter takes gradients (``unfreeze_encoder``)."""
        return any(p.requires_grad for p in self.backbone.parameters())

    def extract_features(self, images: Tensor) -> list[Tensor]:
        """Backbone features at strides 4, 8, 16, 32; with an autograd graph only for the
        blocks ``unfreeze_encoder`` made trainable (and when grad mode is on)."""
        self._check_input(images)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.encoder_trainable):
            if self.config.intensity_normalisation == "image":
                images = normalise_intensity(images)
            return list(self.backbone(images))

    @torch.no_grad()
    def fit_prototypes(
        self, normal_images: Iterable[Tensor] | Tensor, n_images: int, seed: int = 0
    ) -> PRN:
        """Fit the multi-scale prototypes on ``n_images`` normal images.

        ``normal_images`` yields batches (B, C, H, W) or single images (C, H, W) at
        ``config.image_size`` in [0, 1] (a DataLoader's image batches, or one tensor).
        Sets ``config.num_prototypes``.
        """
        batches = self._batches(normal_images, "normal_images")
        self.prototypes.fit(
            (self.extract_features(batch) for batch in batches),
            n_images,
            ratio=self.config.prototype_ratio,
            seed=seed,
            max_iter=self.config.kmeans_max_iter,
            k=self.config.patch_prototypes,
        )
        self._sync_config()
        return self

    @torch.no_grad()
    def fit_memory_bank(
        self,
        normal_images: Iterable[Tensor] | Tensor,
        calibration_images: Iterable[Tensor] | Tensor,
        seed: int = 0,
        progress: bool = False,
    ) -> PRN:
        """Fill the memory bank from normal images and calibrate the fusion on other ones.

        Call after training: the calibration records PRN's own logit statistics. Both arguments
        yield batches (B, C, H, W) (or are one such tensor) at ``config.image_size`` in [0, 1];
        the calibration images must be normal and not among ``normal_images`` (their distances
        to the bank would be zero). Needs ``config.memory_bank_size > 0``. ``progress`` shows
        the coreset selection's progress bar.
        """
        if self.memory_bank is None:
            raise RuntimeError("this PRN has no memory bank: set config.memory_bank_size > 0")
        self._require_fitted()
        was_training = self.training
        self.eval()
        try:
            batches = self._batches(normal_images, "normal_images")
            self.memory_bank.fill(
                (patch_features(self.extract_features(batch)) for batch in batches),
                seed=seed,
                progress=progress,
            )
            self.memory_bank.calibrate(self._calibration_maps(calibration_images))
        finally:
            self.train(was_training)
        return self

    def _calibration_maps(
        self, images: Iterable[Tensor] | Tensor
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """(PRN logits, memory-bank distances) of each batch of ``images``."""
        assert self.memory_bank is not None
        for batch in self._batches(images, "calibration_images"):
            features = self.extract_features(batch)
            size = batch.shape[-2:]
            yield (
                self.head(features, size),
                self.memory_bank.distance_map(patch_features(features), size),
            )

    def _batches(self, images: Iterable[Tensor] | Tensor, name: str) -> Iterator[Tensor]:
        """(B, C, H, W) batches on the model's device from a tensor or an iterable of them."""
        if isinstance(images, Tensor):
            if images.ndim != 4:
                raise ValueError(f"{name} tensor must be (N, C, H, W), got {tuple(images.shape)}")
            images = images.split(16)
        for batch in images:
            if isinstance(batch, Tensor) and batch.ndim == 3:
                batch = batch.unsqueeze(0)
            yield batch.to(self.device) if isinstance(batch, Tensor) else batch

    def forward(self, images: Tensor) -> Tensor:
        """PRN's anomaly logits (B, 1, H, W) for images (B, C, H, W) at ``config.image_size``.

        What training optimises; ``anomaly_map`` adds the memory bank's evidence when there is one.
        """
        self._require_fitted()
        return self.head(self.extract_features(images), images.shape[-2:])

    def head(self, features: Sequence[Tensor], output_size: Sequence[int]) -> Tensor:
        """Everything after the backbone: residuals, fusion, attention and decoder.

        ``features`` are the backbone's 4 maps; ``output_size`` is the (H, W) of the logits.
        Separate from ``forward`` so the head can be timed or run on cached features.
        """
        self._require_fitted()
        if not isinstance(features, list | tuple) or len(features) != 4:
            raise ValueError("features must be the list of 4 backbone feature maps")
        n_protos = self.config.n_prototype_scales
        if self.config.use_residuals:
            residuals = self.prototypes.residuals(features[:n_protos])
        else:  # ablation: the head sees no prototype information
            residuals = [torch.zeros_like(f) for f in features[:n_protos]]
        # Channels-last makes the many small convolutions, resizes and poolings of the head
        # 2-7x faster on CPU (no per-op layout reorders); it changes no value.
        features = [f.contiguous(memory_format=torch.channels_last) for f in features]
        residuals = [r.contiguous(memory_format=torch.channels_last) for r in residuals]
        fused_features = self.feature_fusion(features[:3])
        fused_residuals = self.residual_fusion(residuals, [f.shape[-2:] for f in fused_features])
        attended = [
            attention(torch.cat([f, r], dim=1))
            for attention, f, r in zip(self.attention, fused_features, fused_residuals)
        ]
        logits = self.decoder(features[3], self.second_fusion(attended), output_size)
        return logits.contiguous()

    def _require_fitted(self) -> None:
        if not self.prototypes.is_fitted:
            raise RuntimeError(
                "PRN prototypes are not fitted: call fit_prototypes() or load a fitted state dict"
            )

    def anomaly_map(self, images: Tensor) -> Tensor:
        """Per-pixel anomaly probabilities (B, 1, H, W): the sigmoid of PRN's logits, fused
        with the memory bank's distance map when the model has one (``fuse`` of
        prn_model.memory_bank)."""
        self._require_fitted()
        features = self.extract_features(images)
        logits = self.head(features, images.shape[-2:])
        if self.memory_bank is not None:
            if not self.memory_bank.is_fitted:
                raise RuntimeError(
                    "the PRN memory bank is not fitted: call fit_memory_bank() after training "
                    "or load a fitted state dict"
                )
            distance = self.memory_bank.distance_map(patch_features(features), images.shape[-2:])
            logits = self.memory_bank.fuse(logits, distance)
        return torch.sigmoid(logits)

    def image_score(self, maps: Tensor) -> Tensor:
        """Image anomaly score (B,): mean of the ``config.top_k`` largest values of each map.

        ``maps`` is (B, 1, H, W) or (B, H, W); maps with fewer pixels than top_k use them all.
        """
        valid = isinstance(maps, Tensor) and (
            maps.ndim == 3 or (maps.ndim == 4 and maps.shape[1] == 1)
        )
        if not valid or maps.numel() == 0:
            shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
            raise ValueError(
                f"maps must be a non-empty (B, 1, H, W) or (B, H, W) tensor, got {shape}"
            )
        flat = maps.flatten(1)
        k = min(self.config.top_k, flat.shape[1])
        return flat.topk(k, dim=1).values.mean(dim=1)

    def predict(
        self, images: Tensor | Sequence[Tensor], batch_size: int = 8
    ) -> tuple[Tensor, Tensor | list[Tensor]]:
        """Scores (B,) and anomaly maps for a batch (B, C, H, W) or a list of (C, H, W) images.

        Images of any size are resized to ``config.image_size`` as ``load_image`` resizes
        files for training and evaluation (area averaging to shrink, bilinear to enlarge, on
        the CPU), so an image scores the same here as in the recipe; the scores are computed on
        those network-resolution maps (so they do not depend on the input size) and each map
        is resized back to its input's size: a stacked (B, 1, H, W) tensor when all sizes agree,
        else a list of (1, H_i, W_i). Grayscale images in a list mixed with RGB ones are
        repeated to 3 channels; colour images given to a model trained on grayscale ones
        (``input_channels == 1``) are an error. Runs in eval mode without gradients; the mode
        is restored.
        """
        _positive_int("batch_size", batch_size)
        if isinstance(images, Tensor):
            _check_images(images)
            items = list(images)
        elif isinstance(images, list | tuple) and images:
            items = list(images)
            for index, image in enumerate(items):
                if not isinstance(image, Tensor) or image.ndim != 3:
                    got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
                    raise ValueError(f"images[{index}] must be a (C, H, W) tensor, got {got}")
                _check_images(image.unsqueeze(0), f"images[{index}]")
        else:
            raise ValueError(
                "images must be a (B, C, H, W) tensor or a non-empty list of (C, H, W) tensors, "
                f"got {type(images).__name__}"
            )
        if self.input_channels == 1:
            for index, image in enumerate(items):
                if image.shape[0] != 1:
                    raise ValueError(
                        f"this model was trained on grayscale (1-channel) images, but images"
                        f"[{index}] has {image.shape[0]} channels; convert it to grayscale "
                        "first (prn_model.data.load_image(path, grayscale=True) does)"
                    )
        mixed_channels = len({image.shape[0] for image in items}) > 1
        size = (self.config.image_size, self.config.image_size)

        was_training = self.training
        self.eval()
        scores, maps = [], []
        try:
            with torch.no_grad():
                for start in range(0, len(items), batch_size):
                    chunk = items[start : start + batch_size]
                    batch = torch.cat(
                        [self._prepare(image, size, mixed_channels) for image in chunk]
                    )
                    probabilities = self.anomaly_map(batch)
                    scores.append(self.image_score(probabilities))
                    maps.extend(
                        _resize_map(p, image.shape[-2:]) for p, image in zip(probabilities, chunk)
                    )
        finally:
            self.train(was_training)
        all_scores = torch.cat(scores)
        if len({m.shape for m in maps}) == 1:
            return all_scores, torch.stack(maps)
        return all_scores, maps

    def _prepare(self, image: Tensor, size: tuple[int, int], to_rgb: bool) -> Tensor:
        """Resized exactly as the recipe resizes its files, so both paths score alike."""
        image = resize_image(image.to(dtype=torch.float32), size).clamp(0.0, 1.0)
        batch = image.unsqueeze(0).to(device=self.device)
        return batch.expand(-1, 3, -1, -1) if to_rgb else batch


def _resize_map(probabilities: Tensor, size: Sequence[int]) -> Tensor:
    """(1, h, w) map -> (1, *size) by bilinear interpolation (identity when sizes agree)."""
    if tuple(probabilities.shape[-2:]) == tuple(size):
        return probabilities
    resized = F.interpolate(
        probabilities.unsqueeze(0), size=tuple(size), mode="bilinear", align_corners=False
    )
    return resized.squeeze(0)
