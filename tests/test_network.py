"""PRN network: blocks, the full model, prototypes in checkpoints, predict and the config."""

from __future__ import annotations

import dataclasses
import io
import re

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from prn_model.data import load_image, resize_image
from prn_model.network import (
    PRN,
    MultiScaleFeatureFusion,
    MultiSizeSelfAttention,
    PRNConfig,
    UNetDecoder,
    _from_patch_tokens,
    _resize,
    _to_patch_tokens,
    normalise_intensity,
    valid_patch_divisors,
)

IMAGE_SIZE = 64


class TinyBackbone(nn.Module):
    """Stand-in FeatureExtractor: frozen strided convs giving 4 maps at strides 4, 8, 16, 32."""

    def __init__(self) -> None:
        super().__init__()
        self.name = "tiny"
        self.channels = [8, 12, 16, 20]
        self.strides = [4, 8, 16, 32]
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.BatchNorm2d(8), nn.ReLU())
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 3, stride=2, padding=1), nn.ReLU())
            for a, b in zip(self.channels, self.channels[1:])
        )
        self.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(images.expand(-1, 3, -1, -1))
        features = [x]
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def _config(**overrides) -> PRNConfig:
    values = {
        "backbone": "tiny",
        "image_size": IMAGE_SIZE,
        "fusion_channels": (8, 8, 12),
        "decoder_channels": (16, 12, 8, 8, 4),
        "attention_channels": 4,
        "top_k": 10,
    }
    return PRNConfig(**{**values, **overrides})


def _images(n: int, seed: int = 0, size: int = IMAGE_SIZE, channels: int = 3) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def fitted() -> PRN:
    torch.manual_seed(0)
    model = PRN(_config(), backbone=TinyBackbone())
    return model.fit_prototypes(_images(20), n_images=20, seed=0)


def _assert_all_trainable_parameters_get_gradients(module: nn.Module) -> None:
    trainable = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    assert trainable
    missing = [n for n, p in trainable if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"no gradient reaches {missing}"


# ----------------------------------------------------------------------------- blocks


def test_resize_pools_down_and_interpolates_up():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.equal(_resize(x, (2, 2)), F.avg_pool2d(x, 2))
    assert _resize(x, (8, 8)).shape == (1, 1, 8, 8)
    assert _resize(x, (4, 4)) is x


def _pyramid(channels, sizes=((16, 16), (8, 8), (4, 4)), batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, *s, generator=generator) for c, s in zip(channels, sizes)]


def test_multi_scale_fusion_shapes_and_gradients():
    fusion = MultiScaleFeatureFusion([5, 6, 7], [4, 3, 2])
    outputs = fusion(_pyramid([5, 6, 7]))
    assert [tuple(o.shape) for o in outputs] == [(2, 4, 16, 16), (2, 3, 8, 8), (2, 2, 4, 4)]
    sum(o.square().mean() for o in outputs).backward()
    _assert_all_trainable_parameters_get_gradients(fusion)


def test_multi_scale_fusion_spreads_fewer_sources_to_all_target_sizes():
    fusion = MultiScaleFeatureFusion([5], [4, 3, 2])
    outputs = fusion(_pyramid([5])[:1], [(16, 16), (8, 8), (4, 4)])
    assert [tuple(o.shape) for o in outputs] == [(2, 4, 16, 16), (2, 3, 8, 8), (2, 2, 4, 4)]
    with pytest.raises(ValueError, match="target sizes"):
        fusion(_pyramid([5])[:1])


def test_multi_scale_fusion_equals_one_conv_over_the_resized_concatenation():
    """The per-source convolutions are the documented conv over concat(resized inputs)."""
    torch.manual_seed(1)
    fusion = MultiScaleFeatureFusion([5, 6, 7], [4, 3, 2])
    for module in fusion.modules():  # non-trivial BatchNorm statistics, then freeze them
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    fusion.eval()
    inputs = _pyramid([5, 6, 7], seed=3)
    outputs = fusion(inputs)
    normalised = [norm(x) for norm, x in zip(fusion.input_norms, inputs)]
    for target, output in enumerate(outputs):
        size = inputs[target].shape[-2:]
        stacked = torch.cat([_resize(x, size) for x in normalised], dim=1)
        weight = torch.cat([conv.weight for conv in fusion.mixing[target]], dim=1)
        expected = fusion.post[target](F.conv2d(stacked, weight))
        assert torch.allclose(output, expected, atol=1e-5)


def test_fusion_rejects_wrong_inputs():
    fusion = MultiScaleFeatureFusion([5, 6], [4, 3])
    with pytest.raises(ValueError, match="expected 2 input maps"):
        fusion(_pyramid([5]))
    with pytest.raises(ValueError, match="input 1"):
        fusion(_pyramid([5, 7]))


@pytest.mark.parametrize(
    ("size", "divisors", "expected"),
    [
        ((16, 16), (1, 2, 4, 8), (1, 2, 4, 8)),
        ((8, 12), (1, 2, 4, 8), (1, 2, 4)),
        ((4, 4), (1, 2, 4, 8), (1, 2, 4)),  # d=8 would need half-pixel patches
        ((6, 9), (1, 2, 3), (1, 3)),
        ((2, 2), (8, 2, 2, 1), (2, 1)),
    ],
)
def test_valid_patch_divisors(size, divisors, expected):
    assert valid_patch_divisors(size, divisors) == expected


def test_patch_tokens_round_trip_and_layout():
    x = torch.randn(2, 3, 8, 12)
    tokens = _to_patch_tokens(x, 4)
    assert tokens.shape == (2, 16, 3 * 2 * 3)
    # token 5 is patch (row 1, column 1): rows 2-3, columns 3-5, pixel by pixel
    assert torch.equal(tokens[:, 5], x[:, :, 2:4, 3:6].permute(0, 2, 3, 1).reshape(2, -1))
    assert torch.equal(_from_patch_tokens(tokens, 4, 3, 8, 12), x)


@pytest.mark.parametrize(("size", "n_heads"), [((8, 12), 3), ((16, 8), 4), ((4, 6), 2)])
def test_multi_size_attention_on_non_square_maps(size, n_heads):
    torch.manual_seed(0)
    attention = MultiSizeSelfAttention(6, size, divisors=(1, 2, 4, 8), attention_channels=4)
    assert len(attention.divisors) == n_heads
    x = torch.randn(2, 6, *size)
    out = attention(x)
    assert out.shape == x.shape
    out.square().mean().backward()
    _assert_all_trainable_parameters_get_gradients(attention)


def test_multi_size_attention_mixes_information_between_patches():
    """With only 2x2 patches (1x1 convs elsewhere), a change in one patch reaches the others."""
    torch.manual_seed(0)
    attention = MultiSizeSelfAttention(4, (8, 8), divisors=(2,), attention_channels=4).eval()
    x = torch.randn(1, 4, 8, 8)
    changed = x.clone()
    changed[:, :, :4, :4] += 3.0  # top-left patch only
    difference = (attention(changed) - attention(x)).abs()
    assert difference[:, :, 4:, 4:].max() > 1e-4  # bottom-right patch responds


def test_multi_size_attention_rejects_other_map_sizes():
    attention = MultiSizeSelfAttention(6, (8, 8))
    with pytest.raises(ValueError, match="expected maps"):
        attention(torch.randn(1, 6, 8, 4))
    with pytest.raises(ValueError, match="no divisor"):
        MultiSizeSelfAttention(6, (3, 5), divisors=(2, 4))


def test_decoder_output_shape_and_gradients():
    torch.manual_seed(0)
    decoder = UNetDecoder(20, [8, 8, 12], (16, 12, 8, 8, 4))
    skips = _pyramid([8, 8, 12])
    logits = decoder(torch.randn(2, 20, 2, 2), skips, (64, 64))
    assert logits.shape == (2, 1, 64, 64)
    logits.mean().backward()
    _assert_all_trainable_parameters_get_gradients(decoder)


def test_decoder_starts_near_the_focal_prior():
    decoder = UNetDecoder(20, [8, 8, 12], (16, 12, 8, 8, 4))
    nn.init.zeros_(decoder.logit.weight)
    probabilities = torch.sigmoid(
        decoder(torch.randn(1, 20, 2, 2), _pyramid([8, 8, 12], batch=1), (64, 64))
    )
    assert torch.allclose(probabilities, torch.full_like(probabilities, 0.01))


# ----------------------------------------------------------------------------- PRN


def test_forward_shape_and_gradients_reach_the_head_but_not_the_backbone(fitted):
    fitted.train()
    fitted.zero_grad(set_to_none=True)
    logits = fitted(_images(2, seed=1))
    assert logits.shape == (2, 1, IMAGE_SIZE, IMAGE_SIZE) and logits.dtype == torch.float32
    logits.square().mean().backward()
    _assert_all_trainable_parameters_get_gradients(fitted)
    assert all(not p.requires_grad and p.grad is None for p in fitted.backbone.parameters())
    head = [n for n, p in fitted.named_parameters() if p.requires_grad]
    assert head and not any(n.startswith("backbone.") for n in head)


def test_training_mode_keeps_the_backbone_frozen_in_eval(fitted):
    stem_norm = fitted.backbone.stem[1]
    before = stem_norm.running_mean.clone()
    fitted.train()
    assert not fitted.backbone.training and fitted.feature_fusion.training
    fitted(_images(2, seed=2) * 0.5 + 0.5)
    assert torch.equal(stem_norm.running_mean, before)


@pytest.mark.parametrize(("name", "channels"), [("resnet18", 64), ("efficientnet_lite0", 24)])
def test_registry_backbones(name, channels):
    torch.manual_seed(0)
    model = PRN(_config(backbone=name), pretrained=False)
    assert model.backbone.name == name
    model.fit_prototypes(_images(10), n_images=10)
    assert model.config.num_prototypes == (1, 1, 1)
    assert model.prototypes.prototypes[0].shape == (1, channels, 16, 16)
    logits = model(_images(2, seed=1, channels=1))
    assert logits.shape == (2, 1, IMAGE_SIZE, IMAGE_SIZE) and torch.isfinite(logits).all()
    logits.mean().backward()
    _assert_all_trainable_parameters_get_gradients(model)
    assert all(p.grad is None for p in model.backbone.parameters())


def test_forward_requires_fitted_prototypes():
    model = PRN(_config(), backbone=TinyBackbone())
    with pytest.raises(RuntimeError, match="not fitted"):
        model(_images(1))


def test_fit_prototypes_accepts_batches_and_single_images():
    model = PRN(_config(), backbone=TinyBackbone())
    images = _images(30)
    batches = [images[:7], images[7:20], *images[20:]]  # two batches, then ten (C, H, W) images
    model.fit_prototypes(batches, n_images=30, seed=3)
    assert model.config.num_prototypes == (3, 3, 3)
    reference = PRN(_config(), backbone=model.backbone).fit_prototypes(images, 30, seed=3)
    for a, b in zip(model.prototypes.prototypes, reference.prototypes.prototypes):
        assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="expected n=31"):
        model.fit_prototypes(images, n_images=31)


def test_fewer_prototype_scales():
    model = PRN(_config(n_prototype_scales=1), backbone=TinyBackbone())
    model.fit_prototypes(_images(10), 10)
    assert model.prototypes.n_scales == 1 and model.config.num_prototypes == (1,)
    logits = model(_images(2))
    logits.mean().backward()
    _assert_all_trainable_parameters_get_gradients(model)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.rand(1, 2, IMAGE_SIZE, IMAGE_SIZE), "C = 1 or 3"),
        (torch.rand(3, IMAGE_SIZE, IMAGE_SIZE), "C = 1 or 3"),
        ((torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE) * 255).to(torch.uint8), "float"),
        (torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE) * 255, r"\[0, 1\]"),
        (torch.full((1, 3, IMAGE_SIZE, IMAGE_SIZE), float("nan")), r"\[0, 1\]"),
        (torch.rand(1, 3, 32, 32), "64x64"),
        (torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE).numpy(), "torch.Tensor"),
    ],
)
def test_forward_rejects_bad_images(fitted, images, message):
    with pytest.raises(ValueError, match=message):
        fitted(images)


def test_anomaly_map_and_image_score(fitted):
    fitted.eval()
    images = _images(3, seed=4)
    maps = fitted.anomaly_map(images)
    assert maps.shape == (3, 1, IMAGE_SIZE, IMAGE_SIZE)
    assert torch.allclose(maps, torch.sigmoid(fitted(images)))
    scores = fitted.image_score(maps)
    expected = maps.flatten(1).sort(dim=1, descending=True).values[:, :10].mean(dim=1)
    assert scores.shape == (3,) and torch.allclose(scores, expected)


def test_image_score_with_fewer_pixels_than_top_k_uses_them_all(fitted):
    maps = torch.tensor([[[0.1, 0.2], [0.3, 0.4]]])
    assert torch.allclose(fitted.image_score(maps), torch.tensor([0.25]))
    with pytest.raises(ValueError, match="maps"):
        fitted.image_score(torch.rand(2, 3, 4, 4))


def test_predict_on_differently_sized_images_returns_maps_of_those_sizes(fitted):
    fitted.train()
    generator = torch.Generator().manual_seed(5)
    images = [
        torch.rand(3, 64, 64, generator=generator),
        torch.rand(1, 50, 90, generator=generator),
        torch.rand(3, 128, 40, generator=generator),
    ]
    scores, maps = fitted.predict(images, batch_size=2)
    assert fitted.training  # mode restored
    assert scores.shape == (3,) and isinstance(maps, list)
    assert [tuple(m.shape) for m in maps] == [(1, 64, 64), (1, 50, 90), (1, 128, 40)]
    assert all(((m >= 0) & (m <= 1)).all() for m in maps)
    # the first image already has the network size: its map is the plain anomaly map
    fitted.eval()
    reference = fitted.anomaly_map(torch.cat([images[0][None], images[0][None]]))
    assert torch.allclose(maps[0], reference[0], atol=1e-5)
    assert torch.allclose(scores[0], fitted.image_score(reference)[0], atol=1e-5)


def test_predict_on_a_batch_returns_a_stacked_tensor(fitted):
    images = _images(3, seed=6, size=48)
    scores, maps = fitted.predict(images)
    assert scores.shape == (3,) and isinstance(maps, torch.Tensor)
    assert maps.shape == (3, 1, 48, 48)
    list_scores, list_maps = fitted.predict(list(images))
    assert torch.allclose(scores, list_scores) and torch.allclose(maps, list_maps)


def test_predict_resizes_as_the_recipe_loads_files(fitted, tmp_path):
    """An image scores the same given at its own size or read at the network's by the recipe."""
    generator = torch.Generator().manual_seed(7)
    pixels = (torch.rand(1, 150, 90, generator=generator) * 255).round().to(torch.uint8)
    path = tmp_path / "tile.png"
    cv2.imwrite(str(path), pixels[0].numpy())
    native = load_image(path)
    as_trained = load_image(path, IMAGE_SIZE)
    assert torch.equal(resize_image(native, IMAGE_SIZE), as_trained)
    scores, maps = fitted.predict([native])
    reference_scores, reference_maps = fitted.predict([as_trained])
    assert torch.equal(scores, reference_scores)
    assert maps.shape == (1, 1, 150, 90) and reference_maps.shape == (1, 1, IMAGE_SIZE, IMAGE_SIZE)


def test_resize_image_enlarges_keeps_the_device_and_rejects_bad_input():
    image = torch.rand(3, 20, 30, dtype=torch.float64)
    enlarged = resize_image(image, (40, 60))
    assert enlarged.shape == (3, 40, 60) and enlarged.dtype == torch.float32
    assert ((enlarged >= 0) & (enlarged <= 1)).all()
    assert resize_image(image, (20, 30)) is image
    for bad, message in [
        (torch.rand(20, 30), r"float \(C, H, W\) tensor, got torch.float32 \(20, 30\)"),
        (torch.zeros(1, 4, 4, dtype=torch.uint8), "got torch.uint8"),
        ("image.png", "got image.png"),
        # Resizing clips: a 0..255 image came out white, and NaN passed through.
        (torch.rand(3, 20, 30) * 255, r"finite values in \[0, 1\] .* got values in \[0"),
        (torch.full((1, 4, 4), float("nan")), r"got values in \[nan, nan\]"),
        (torch.rand(3, 0, 4), r"image is empty: \(3, 0, 4\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            resize_image(bad, 8)
    with pytest.raises(ValueError, match="size must be a positive int"):
        resize_image(image, None)
    # A size that is neither an int nor a pair is named (it was "'float' object is not
    # iterable"); numpy integers count as ints, as in anomgen.
    for size in (8.0, "8", (8, 8, 8), (8, 0), True):
        with pytest.raises(
            ValueError, match=f"size must be a positive int .* got {re.escape(repr(size))}"
        ):
            resize_image(image, size)
    assert resize_image(image, np.int64(8)).shape == (3, 8, 8)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ([], "non-empty list"),
        ([torch.rand(1, 3, 8, 8)], r"images\[0\] must be a \(C, H, W\)"),
        ([torch.rand(3, 8, 8), torch.rand(3, 8, 8) * 2], r"images\[1\]"),
        ("image.png", "non-empty list"),
    ],
)
def test_predict_rejects_bad_input(fitted, images, message):
    with pytest.raises(ValueError, match=message):
        fitted.predict(images)


def test_state_dict_round_trip_restores_prototypes_into_a_fresh_model(fitted):
    fitted.eval()
    state = fitted.state_dict()
    assert "prototypes.prototypes_0" in state and "prototypes.fitted" in state
    images = _images(2, seed=7)
    expected = fitted(images)

    # a model built from the saved config has the checkpoint's buffer shapes: strict load
    saved = yaml.safe_load(yaml.safe_dump(fitted.config.to_dict()))
    fresh = PRN(PRNConfig.from_dict(saved), backbone=TinyBackbone())
    assert fresh.prototypes.num_prototypes == fitted.prototypes.num_prototypes
    with pytest.raises(RuntimeError, match="not fitted"):
        fresh(images)
    fresh.load_state_dict(state, strict=True)
    assert torch.allclose(fresh.eval()(images), expected)

    # a config without num_prototypes works too: loading adopts the stored shapes
    bare = PRN(_config(), backbone=TinyBackbone())
    bare.load_state_dict(state)
    assert bare.config.num_prototypes == fitted.config.num_prototypes
    for a, b in zip(bare.prototypes.prototypes, fitted.prototypes.prototypes):
        assert torch.equal(a, b)
    assert torch.allclose(bare.eval()(images), expected)


def test_whole_model_pickles_with_its_prototypes(fitted):
    buffer = io.BytesIO()
    torch.save(fitted, buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=False)
    fitted.eval()
    images = _images(1, seed=8)
    assert torch.equal(restored.eval()(images), fitted(images))


# ----------------------------------------------------------------------------- config


def test_config_round_trips_through_yaml():
    config = _config(num_prototypes=(2, 3, 4), attention_divisors=(1, 2))
    plain = config.to_dict()
    assert all(not isinstance(v, tuple) for v in plain.values())
    restored = PRNConfig.from_dict(yaml.safe_load(yaml.safe_dump(plain)))
    assert restored == config
    assert PRNConfig.from_dict(PRNConfig().to_dict()) == PRNConfig()


def test_config_rejects_unknown_keys_by_name():
    with pytest.raises(ValueError, match=r"\['imagesize', 'topk'\]"):
        PRNConfig.from_dict({"imagesize": 256, "topk": 3, "top_k": 4})


@pytest.mark.parametrize(
    "overrides",
    [
        {"image_size": 100},
        {"image_size": 0},
        {"prototype_ratio": 0.0},
        {"prototype_ratio": 1.5},
        {"n_prototype_scales": 4},
        {"attention_divisors": ()},
        {"attention_divisors": (1, 0)},
        {"fusion_channels": (8, 8)},
        {"decoder_channels": (8, 8, 8, 8, 8, 8)},
        {"top_k": 0},
        {"top_k": True},
        {"num_prototypes": (1, 2)},
        {"backbone": ""},
        {"intensity_normalisation": "global"},
    ],
)
def test_config_rejects_bad_values(overrides):
    with pytest.raises(ValueError):
        dataclasses.replace(PRNConfig(), **overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_prototype_scales": 1.0}, "n_prototype_scales must be 1, 2 or 3, got 1.0"),
        ({"n_prototype_scales": True}, "n_prototype_scales must be 1, 2 or 3, got True"),
        ({"use_residuals": "no"}, "use_residuals must be True or False, got 'no'"),
        ({"use_residuals": 0}, "use_residuals must be True or False, got 0"),
    ],
)
def test_config_names_a_value_of_the_wrong_type(overrides, message):
    with pytest.raises(ValueError, match=message):
        PRNConfig(**overrides)


def test_model_copies_its_config():
    config = _config()
    model = PRN(config, backbone=TinyBackbone())
    model.fit_prototypes(_images(10), 10)
    assert config.num_prototypes is None and model.config.num_prototypes == (1, 1, 1)


def test_backbone_must_have_four_scales():
    class ThreeScales(TinyBackbone):
        def forward(self, images):
            return super().forward(images)[:3]

    with pytest.raises(ValueError, match="4 feature maps"):
        PRN(_config(), backbone=ThreeScales())


def test_normalise_intensity_gives_every_image_the_same_mean_and_contrast():
    base = _images(2, seed=3) * 0.2 + 0.1
    images = torch.cat([base, base * 2.5 + 0.2])  # brighter, higher-contrast copies
    normalised = normalise_intensity(images)
    torch.testing.assert_close(normalised[:2], normalised[2:], atol=1e-5, rtol=0)
    means = normalised.flatten(1).mean(dim=1)
    stds = normalised.flatten(1).std(dim=1)
    torch.testing.assert_close(means, torch.full((4,), 0.5), atol=1e-4, rtol=0)
    torch.testing.assert_close(stds, torch.full((4,), 0.125), atol=1e-4, rtol=0)


def test_normalise_intensity_keeps_the_range_and_only_shifts_flat_images():
    flat = torch.full((1, 1, 8, 8), 0.9)
    torch.testing.assert_close(normalise_intensity(flat), torch.full_like(flat, 0.5))
    outlier = torch.zeros(1, 1, 16, 16)
    outlier[..., 0, 0] = 1.0  # one bright pixel lies far beyond four standard deviations
    normalised = normalise_intensity(outlier)
    assert normalised.min() >= 0 and normalised.max() == 1.0


def test_intensity_normalisation_makes_the_map_blind_to_exposure():
    torch.manual_seed(0)
    model = PRN(_config(intensity_normalisation="image"), backbone=TinyBackbone())
    model.fit_prototypes(_images(10), 10).eval()
    images = _images(2, seed=7) * 0.5
    brighter = images * 1.6 + 0.1
    torch.testing.assert_close(
        model.anomaly_map(images), model.anomaly_map(brighter), atol=1e-5, rtol=0
    )
    plain = PRN(_config(), backbone=TinyBackbone())
    plain.load_state_dict(model.state_dict())
    assert not torch.allclose(plain.anomaly_map(images), plain.anomaly_map(brighter), atol=1e-3)


def test_helpers_refuse_shapes_and_divisors_they_would_misread():
    shape = r"\(B, C, H, W\) tensor, got \(3, 8, 8\)"
    with pytest.raises(ValueError, match=f"images must be a {shape}"):
        normalise_intensity(torch.rand(3, 8, 8))  # used to broadcast to (3, 3, 8, 8)
    for divisors in ((-2, 2), (0,)):
        with pytest.raises(ValueError, match="divisors"):
            valid_patch_divisors((8, 8), divisors)


def test_a_given_backbone_and_a_weights_path_are_refused_together():
    with pytest.raises(ValueError, match="weights_path '/nonexistent.pth' is for PRN's own"):
        PRN(_config(), backbone=TinyBackbone(), weights_path="/nonexistent.pth")
