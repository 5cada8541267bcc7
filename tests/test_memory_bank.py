"""Memory bank fused with PRN: coreset selection, distance maps, calibration, the PRN wiring."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from prn_model.memory_bank import PatchMemoryBank, greedy_coreset, patch_features
from prn_model.network import PRN, PRNConfig
from tests.test_network import TinyBackbone, _config, _images


def _bank(size: int = 64, channels: int = 4, image_size: int = 64, weight: float = 0.5):
    return PatchMemoryBank(channels, size, image_size, weight)


def _patches(n: int, channels: int = 4, side: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, channels, side, side, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- coreset


def test_coreset_takes_one_vector_from_each_far_apart_cluster():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0], [100.0, 100.0]])
    points = (centres.repeat_interleave(50, 0) + torch.randn(200, 2, generator=generator)).float()
    chosen = greedy_coreset(points, 4, seed=3)
    clusters = {int(i) // 50 for i in chosen}
    assert clusters == {0, 1, 2, 3}
    assert len(set(chosen.tolist())) == 4


def test_coreset_covers_better_than_random_rows():
    """The largest distance of any vector to its nearest chosen one is what the greedy step
    minimises; it must beat a random subset of the same size."""
    generator = torch.Generator().manual_seed(1)
    vectors = torch.cat([torch.randn(900, 8, generator=generator), 6 + torch.randn(30, 8)])

    def coverage(index: torch.Tensor) -> float:
        return float(torch.cdist(vectors, vectors[index]).amin(dim=1).max())

    random_rows = torch.randperm(len(vectors), generator=generator)[:40]
    assert coverage(greedy_coreset(vectors, 40, seed=0)) < coverage(random_rows)


def test_coreset_is_seeded_projects_wide_vectors_and_keeps_small_sets_whole():
    vectors = torch.randn(300, 200, generator=torch.Generator().manual_seed(2))
    first = greedy_coreset(vectors, 20, projection_dim=16, seed=5)
    assert torch.equal(first, greedy_coreset(vectors, 20, projection_dim=16, seed=5))
    assert not torch.equal(first, greedy_coreset(vectors, 20, projection_dim=16, seed=6))
    assert torch.equal(greedy_coreset(vectors[:7], 10), torch.arange(7))


@pytest.mark.parametrize(
    "vectors, size, message",
    [
        (torch.zeros(0, 3), 2, "non-empty"),
        (torch.zeros(4), 2, r"\(N, C\)"),
        (torch.zeros(4, 3), 0, "size"),
        (torch.zeros(4, 3), 1.5, "size"),
    ],
)
def test_coreset_rejects_bad_input(vectors, size, message):
    with pytest.raises(ValueError, match=message):
        greedy_coreset(vectors, size)


# ----------------------------------------------------------------------------- the bank


def test_patch_features_average_and_join_the_middle_scales():
    features = [torch.rand(2, c, 64 // s, 64 // s) for c, s in ((3, 4), (5, 8), (7, 16), (9, 32))]
    patches = patch_features(features)
    assert patches.shape == (2, 12, 8, 8)
    inner = features[1][:, :, 2:5, 2:5].mean(dim=(2, 3))
    assert torch.allclose(patches[:, :5, 3, 3], inner)
    with pytest.raises(ValueError, match="4 backbone feature maps"):
        patch_features(features[:3])


def test_fill_keeps_at_most_size_vectors_drawn_from_the_images():
    patches = _patches(3)
    bank = _bank(size=10).fill([patches[:2], patches[2:]], seed=0)
    assert bank.bank.shape == (10, 4)
    pool = patches.permute(0, 2, 3, 1).reshape(-1, 4)
    assert (bank.bank[:, None] == pool[None]).all(dim=2).any(dim=1).all()  # rows of the pool
    # fewer candidates than size: all of them (a quarter of each image's 64 vectors)
    assert _bank(size=1000).fill([patches]).bank.shape == (3 * 16, 4)
    with pytest.raises(ValueError, match="no normal images"):
        _bank().fill([])
    with pytest.raises(ValueError, match=r"\(B, 4, h, w\)"):
        _bank().fill([torch.rand(1, 5, 8, 8)])


def test_distance_map_is_zero_on_bank_vectors_and_grows_away_from_them():
    bank = _bank(size=4, image_size=64)
    bank.bank = torch.eye(4)
    bank.bank_norms = torch.ones(4)
    near = torch.zeros(1, 4, 8, 8)
    near[:, 0] = 1  # every location equals the first bank vector
    far = near * 10
    assert bank.distance_map(near, (64, 64)).abs().max() < 1e-5
    distance = bank.distance_map(far, (64, 64))
    assert distance.shape == (1, 1, 64, 64)
    assert torch.allclose(distance, torch.full_like(distance, 9.0), atol=1e-4)
    with pytest.raises(RuntimeError, match="empty"):
        _bank().distance_map(near, (64, 64))


def test_distance_map_is_blurred_by_a_gaussian_of_sigma_image_size_over_64():
    """One far patch among near ones: the blur spreads its distance over the neighbours and
    keeps the total (a sharp map would put it all on one pixel)."""
    bank = _bank(size=1, channels=1, image_size=64)  # sigma 1: kernel radius 3
    bank.bank, bank.bank_norms = torch.zeros(1, 1), torch.zeros(1)
    patches = torch.zeros(1, 1, 16, 16)
    patches[0, 0, 8, 8] = 1.0
    distance = bank.distance_map(patches, (16, 16))[0, 0]
    kernel = torch.exp(-0.5 * torch.arange(-3.0, 4.0) ** 2)
    kernel /= kernel.sum()
    assert distance[8, 8] == pytest.approx(float(kernel[3] ** 2), rel=1e-5)
    assert distance[8, 10] == pytest.approx(float(kernel[3] * kernel[5]), rel=1e-5)
    assert float(distance.sum()) == pytest.approx(1.0, rel=1e-5)
    assert float(distance[8, 12]) == 0.0  # beyond the kernel's radius


def test_fuse_mixes_standardised_maps_in_the_logit_scale():
    bank = _bank(weight=0.25).fill([_patches(2)])
    with pytest.raises(RuntimeError, match="not calibrated"):
        bank.fuse(torch.zeros(1), torch.zeros(1))
    logits = torch.tensor([-4.0, -2.0, 0.0])
    distances = torch.tensor([1.0, 2.0, 3.0])
    bank.calibrate([(logits[:1], distances[:2]), (logits[1:], distances[2:])])  # batch by batch
    logit_mean, logit_std, distance_mean, distance_std = bank.calibration.tolist()
    assert (logit_mean, distance_mean) == (-2.0, 2.0)
    assert logit_std == pytest.approx(2.0) and distance_std == pytest.approx(1.0)
    fused = bank.fuse(torch.tensor([-2.0, 2.0]), torch.tensor([2.0, 4.0]))
    # z(logit) = 0, 2; z(distance) = 0, 2 -> mixed z = 0, 2 -> logits -2, 2
    assert torch.allclose(fused, torch.tensor([-2.0, 2.0]))
    bank.weight = 0.0
    assert torch.equal(bank.fuse(logits, distances + 100), logits)


def test_calibration_equals_the_statistics_of_all_maps_at_once():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 1, 16, 16, generator=generator) * 2 - 4
    distances = torch.rand(6, 1, 16, 16, generator=generator) * 5 + 18
    bank = _bank().fill([_patches(1)])
    bank.calibrate(zip(logits.split(4), distances.split(4)))
    expected = torch.stack([logits.mean(), logits.std(), distances.mean(), distances.std()])
    assert torch.allclose(bank.calibration, expected, rtol=1e-5)


def test_calibrate_rejects_unusable_maps():
    with pytest.raises(RuntimeError, match="fill the memory bank"):
        _bank().calibrate([(torch.rand(5), torch.rand(5))])
    bank = _bank().fill([_patches(1)])
    with pytest.raises(ValueError, match="logits are constant"):
        bank.calibrate([(torch.ones(5), torch.rand(5))])
    with pytest.raises(ValueError, match="distances are constant"):
        bank.calibrate([(torch.rand(5), torch.full((5,), 20.0))])
    with pytest.raises(ValueError, match="finite"):
        bank.calibrate([(torch.tensor([0.0, float("nan")]), torch.rand(2))])
    with pytest.raises(ValueError, match="at least 2 pixels of normal images, got 0 logits"):
        bank.calibrate([])
    # Logits but no distances: 0 / 0 would be a NaN calibration, every fused map NaN.
    with pytest.raises(ValueError, match="got 0 distances"):
        bank.calibrate([(torch.randn(1, 1, 4, 4), torch.empty(0))])
    with pytest.raises(ValueError, match="got 1 logits"):
        bank.calibrate([(torch.randn(1), torch.randn(1))])
    with pytest.raises(ValueError, match="pairs"):
        bank.calibrate([torch.rand(5)])
    assert not bank.is_fitted


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"channels": 0}, "channels"),
        ({"size": 0}, "size"),
        ({"image_size": True}, "image_size"),
        ({"weight": 1.5}, "weight"),
    ],
)
def test_bank_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PatchMemoryBank(**{"channels": 4, "size": 8, "image_size": 64, **kwargs})


# ----------------------------------------------------------------------------- inside PRN


@pytest.fixture(scope="module")
def fused() -> PRN:
    torch.manual_seed(0)
    model = PRN(_config(memory_bank_size=50), backbone=TinyBackbone())
    model.fit_prototypes(_images(12), n_images=12)
    return model.fit_memory_bank(_images(10, seed=1), _images(4, seed=2), seed=0).eval()


def test_fused_map_differs_from_prn_alone_and_weight_zero_restores_it(fused):
    images = _images(3, seed=9)
    alone = torch.sigmoid(fused(images))
    with_bank = fused.anomaly_map(images)
    assert with_bank.shape == alone.shape and not torch.allclose(with_bank, alone)
    fused.memory_bank.weight = 0.0
    try:
        assert torch.allclose(fused.anomaly_map(images), alone, atol=1e-6)
    finally:
        fused.memory_bank.weight = 0.5


def test_fitted_bank_travels_in_the_state_dict(fused):
    images = _images(2, seed=4)
    expected = fused.anomaly_map(images)
    fresh = PRN(fused.config, backbone=TinyBackbone())
    assert fresh.memory_bank.bank.shape[0] == 0
    fresh.load_state_dict({**fused.state_dict(), "memory_bank.fitted": torch.tensor(False)})
    with pytest.raises(RuntimeError, match="memory bank is not fitted"):
        fresh.eval().anomaly_map(images)
    fresh.load_state_dict(fused.state_dict(), strict=True)
    assert fresh.memory_bank.bank.shape == fused.memory_bank.bank.shape
    assert torch.allclose(fresh.eval().anomaly_map(images), expected)


def test_fit_memory_bank_needs_a_configured_bank_and_calibration_images():
    model = PRN(_config(), backbone=TinyBackbone())
    model.fit_prototypes(_images(4), n_images=4)
    with pytest.raises(RuntimeError, match="no memory bank"):
        model.fit_memory_bank(_images(2), _images(2))
    banked = PRN(_config(memory_bank_size=8), backbone=TinyBackbone())
    with pytest.raises(RuntimeError, match="prototypes are not fitted"):
        banked.fit_memory_bank(_images(2), _images(2))
    banked.fit_prototypes(_images(4), n_images=4)
    with pytest.raises(ValueError, match="got 0 logits"):
        banked.fit_memory_bank(_images(2), [])
    assert banked.training  # the mode is restored after an error


@pytest.mark.parametrize(
    "overrides", [{"memory_bank_size": -1}, {"memory_bank_size": 2.5}, {"memory_bank_weight": 2}]
)
def test_config_rejects_bad_memory_bank_settings(overrides):
    with pytest.raises(ValueError, match="memory_bank"):
        dataclasses.replace(PRNConfig(), **overrides)


def test_coreset_projection_and_fusion_shapes_are_checked():
    with pytest.raises(ValueError, match="projection_dim must be a positive int, got 0"):
        greedy_coreset(torch.randn(50, 200), 5, projection_dim=0)
    bank = _bank().fill([_patches(1)])
    bank.calibrate([(torch.randn(2, 1, 8, 8), torch.rand(2, 1, 8, 8))])
    with pytest.raises(ValueError, match=r"logits \(2, 1, 8, 8\) and distance \(1, 1, 1, 1\)"):
        bank.fuse(torch.randn(2, 1, 8, 8), torch.rand(1, 1, 1, 1))
