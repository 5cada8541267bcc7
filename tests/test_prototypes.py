"""Multi-scale prototypes: k-means, nearest prototype, residuals and the PrototypeBank buffers."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from prn_model.prototypes import (
    PrototypeBank,
    _reseed_empty,
    kmeans,
    nearest_patch_prototype,
    nearest_prototype,
    num_prototypes,
)

SHAPES = [(4, 8, 8), (6, 4, 4), (8, 2, 2)]


def _feature_batches(n: int, batch: int, seed: int = 0, extra_scale: bool = False):
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for start in range(0, n, batch):
        size = min(batch, n - start)
        maps = [torch.rand(size, *shape, generator=generator) for shape in SHAPES]
        if extra_scale:
            maps.append(torch.rand(size, 3, 1, 1, generator=generator))
        batches.append(maps)
    return batches


@pytest.mark.parametrize(
    ("n", "ratio", "expected"),
    [(1, 0.1, 1), (4, 0.1, 1), (10, 0.1, 1), (14, 0.1, 1), (15, 0.1, 2), (25, 0.1, 3),
     (100, 0.1, 10), (123, 0.1, 12), (20, 0.5, 10), (7, 1.0, 7)],
)  # fmt: skip
def test_num_prototypes_is_ten_percent_rounded_min_one(n, ratio, expected):
    assert num_prototypes(n, ratio) == expected


@pytest.mark.parametrize(("n", "ratio"), [(0, 0.1), (-3, 0.1), (10, 0.0), (10, 1.5), (2.0, 0.1)])
def test_num_prototypes_rejects_bad_values(n, ratio):
    with pytest.raises(ValueError):
        num_prototypes(n, ratio)


def _clustered_points(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 32, generator=generator) * 20
    labels = torch.arange(4).repeat_interleave(25)
    points = centres[labels] + 0.1 * torch.randn(100, 32, generator=generator)
    permutation = torch.randperm(100, generator=generator)
    return points[permutation], labels[permutation], centres


def test_kmeans_recovers_well_separated_clusters():
    points, true_labels, true_centres = _clustered_points()
    centres, labels = kmeans(points, 4, generator=torch.Generator().manual_seed(3), chunk_size=7)
    # each true cluster maps to exactly one found cluster, and the centres match
    pairs = {(int(t), int(f)) for t, f in zip(true_labels, labels)}
    assert len(pairs) == 4 and len({f for _, f in pairs}) == 4
    for true, found in pairs:
        assert torch.allclose(centres[found], true_centres[true], atol=0.1)


def test_kmeans_is_deterministic_for_a_seed():
    points = torch.randn(60, 20, generator=torch.Generator().manual_seed(1))
    first = kmeans(points, 6, generator=torch.Generator().manual_seed(42))
    second = kmeans(points, 6, generator=torch.Generator().manual_seed(42))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_kmeans_converges_to_a_lloyd_fixed_point_and_leaves_the_bank_intact():
    points = torch.randn(80, 10, generator=torch.Generator().manual_seed(2))
    original = points.clone()
    centres, labels = kmeans(points, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(points, original)
    assert torch.equal(torch.cdist(points, centres).argmin(dim=1), labels)
    for cluster in range(5):
        assert torch.allclose(centres[cluster], points[labels == cluster].mean(dim=0), atol=1e-5)


def test_kmeans_never_allocates_a_second_copy_of_the_bank():
    bank = torch.randn(64, 2**14, generator=torch.Generator().manual_seed(0))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as recorded:
        kmeans(bank, 6, generator=torch.Generator().manual_seed(0), chunk_size=8)
    largest = max(event.self_cpu_memory_usage for event in recorded.events())
    assert 0 < largest <= bank.nbytes // 8  # one 8-row chunk at most


def test_kmeans_with_fewer_distinct_points_than_k_still_returns_k_finite_centres():
    distinct = torch.tensor([[0.0, 0.0], [5.0, 5.0], [9.0, -1.0]])
    points = distinct.repeat(4, 1)
    centres, labels = kmeans(points, 5, generator=torch.Generator().manual_seed(0))
    assert centres.shape == (5, 2) and torch.isfinite(centres).all()
    assert torch.allclose(centres[labels], points)


def test_reseed_empty_moves_empty_centres_onto_the_worst_served_points_in_order():
    bank = torch.arange(12.0).reshape(6, 2)
    centres = torch.zeros(3, 2)
    counts = torch.tensor([6, 0, 0])
    min_distances = torch.tensor([0.5, 3.0, 1.0, 3.0, 0.0, 2.0])  # ties: lower index first
    _reseed_empty(centres, counts, bank, min_distances)
    assert torch.equal(centres[0], torch.zeros(2))
    assert torch.equal(centres[1], bank[1]) and torch.equal(centres[2], bank[3])


def test_kmeans_rejects_bad_input():
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="k must be"):
        kmeans(torch.rand(3, 2), 4, generator=generator)
    with pytest.raises(ValueError, match="2-D float"):
        kmeans(torch.rand(3, 2, 2), 1, generator=generator)
    with pytest.raises(ValueError, match="NaN"):
        kmeans(torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), 1, generator=generator)


def test_nearest_prototype_matches_brute_force():
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(9, 3, 5, 4, generator=generator)
    prototypes = torch.randn(6, 3, 5, 4, generator=generator)
    result = nearest_prototype(features, prototypes)
    brute = ((features[:, None] - prototypes[None]) ** 2).flatten(2).sum(dim=2)
    assert torch.equal(result.index, brute.argmin(dim=1))
    assert torch.allclose(result.distance, brute.min(dim=1).values, rtol=1e-4)
    assert torch.allclose(result.residual, (features - prototypes[brute.argmin(dim=1)]) ** 2)


def test_residual_of_a_prototype_itself_is_zero():
    prototypes = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    result = nearest_prototype(prototypes[[2, 0]], prototypes)
    assert result.index.tolist() == [2, 0]
    assert torch.count_nonzero(result.residual) == 0


def test_nearest_prototype_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="does not match"):
        nearest_prototype(torch.rand(2, 3, 4, 4), torch.rand(5, 3, 4, 5))
    with pytest.raises(ValueError, match="features"):
        nearest_prototype(torch.rand(3, 4, 4), torch.rand(5, 3, 4, 4))


def test_bank_fit_gives_k_whole_map_prototypes_per_scale():
    bank = PrototypeBank(SHAPES)
    assert not bank.is_fitted and bank.num_prototypes == (0, 0, 0)
    bank.fit(_feature_batches(30, 8, extra_scale=True), n=30, seed=0)
    assert bank.is_fitted and bank.num_prototypes == (3, 3, 3)
    for prototypes, shape in zip(bank.prototypes, SHAPES):
        assert prototypes.shape == (3, *shape)
    residuals = bank.residuals(_feature_batches(5, 5, seed=9)[0])
    assert [tuple(r.shape) for r in residuals] == [(5, *s) for s in SHAPES]


def test_bank_fit_is_deterministic_and_the_prototypes_are_cluster_means():
    batches = _feature_batches(20, 6)
    first = PrototypeBank(SHAPES).fit(batches, n=20, ratio=0.2, seed=7)
    second = PrototypeBank(SHAPES).fit(batches, n=20, ratio=0.2, seed=7)
    for a, b in zip(first.prototypes, second.prototypes):
        assert torch.equal(a, b)
    # every prototype is the mean of the training maps assigned to it (a Lloyd fixed point)
    maps = torch.cat([batch[0] for batch in batches])
    index = nearest_prototype(maps, first.prototypes[0]).index
    for k in range(first.num_prototypes[0]):
        assert torch.allclose(first.prototypes[0][k], maps[index == k].mean(dim=0), atol=1e-5)


def test_bank_residual_is_zero_for_training_map_when_k_equals_n():
    batches = _feature_batches(4, 4)
    bank = PrototypeBank(SHAPES).fit(batches, n=4, ratio=1.0)
    residuals = bank.residuals(batches[0])
    assert all(torch.count_nonzero(r) == 0 for r in residuals)


def test_bank_fit_checks_the_sample_count_and_shapes():
    with pytest.raises(ValueError, match="expected n=10"):
        PrototypeBank(SHAPES).fit(_feature_batches(8, 4), n=10)
    with pytest.raises(ValueError, match="more than n=5"):
        PrototypeBank(SHAPES).fit(_feature_batches(8, 4), n=5)
    wrong = [[torch.rand(2, 4, 8, 8), torch.rand(2, 6, 4, 4), torch.rand(2, 8, 3, 3)]]
    with pytest.raises(ValueError, match="scale 2"):
        PrototypeBank(SHAPES).fit(wrong, n=2)


def test_unfitted_bank_refuses_residuals():
    with pytest.raises(RuntimeError, match="not fitted"):
        PrototypeBank(SHAPES).residuals(_feature_batches(2, 2)[0])


def test_state_dict_round_trip_restores_prototypes_into_a_fresh_bank():
    fitted = PrototypeBank(SHAPES).fit(_feature_batches(20, 20), n=20, seed=1)
    state = fitted.state_dict()
    assert set(state) == {"prototypes_0", "prototypes_1", "prototypes_2", "fitted"}

    fresh = PrototypeBank(SHAPES)  # no counts: load_state_dict adopts the stored K
    fresh.load_state_dict(state)
    sized = PrototypeBank(SHAPES, num_prototypes=fitted.num_prototypes)
    assert not sized.is_fitted  # zero placeholders do not count as prototypes
    sized.load_state_dict(state, strict=True)
    queries = _feature_batches(6, 6, seed=4)[0]
    expected = [nearest_prototype(q, p).residual for q, p in zip(queries, fitted.prototypes)]
    for bank in (fitted, fresh, sized):
        assert bank.is_fitted
        for a, b in zip(bank.prototypes, fitted.prototypes):
            assert torch.equal(a, b)
        for residual, reference in zip(bank.residuals(queries), expected):
            assert torch.allclose(residual, reference)


def test_bank_rejects_a_state_dict_with_other_map_shapes():
    other = PrototypeBank([(4, 8, 8), (6, 4, 4), (8, 4, 4)])
    other.fit(
        [[torch.rand(3, 4, 8, 8), torch.rand(3, 6, 4, 4), torch.rand(3, 8, 4, 4)]], n=3, ratio=1.0
    )
    with pytest.raises(RuntimeError, match="size mismatch"):
        PrototypeBank(SHAPES).load_state_dict(other.state_dict())


# ------------------------------------------------------------------------- patch matching


def test_nearest_patch_prototype_matches_brute_force_per_location():
    generator = torch.Generator().manual_seed(3)
    features = torch.rand(2, 5, 3, 4, generator=generator)
    prototypes = torch.rand(7, 5, 1, 1, generator=generator)
    residual = nearest_patch_prototype(features, prototypes)
    centres = prototypes.flatten(1)
    for b in range(2):
        for y in range(3):
            for x in range(4):
                vector = features[b, :, y, x]
                nearest = centres[(centres - vector).square().sum(dim=1).argmin()]
                torch.testing.assert_close(residual[b, :, y, x], (vector - nearest).square())


def test_nearest_patch_prototype_is_zero_at_the_prototypes_and_rejects_bad_shapes():
    prototypes = torch.rand(6, 4, 1, 1)
    features = prototypes.flatten(1).T.reshape(1, 4, 2, 3)
    assert torch.count_nonzero(nearest_patch_prototype(features, prototypes)) == 0
    with pytest.raises(ValueError, match=r"\(K>=1, 4, 1, 1\)"):
        nearest_patch_prototype(features, torch.rand(6, 4, 2, 3))
    with pytest.raises(ValueError, match="features"):
        nearest_patch_prototype(torch.rand(4, 2, 3), prototypes)


def test_patch_bank_fits_k_feature_vectors_per_scale_deterministically():
    def fitted(seed: int) -> PrototypeBank:
        bank = PrototypeBank(SHAPES, matching="patch")
        return bank.fit(_feature_batches(10, 4), n=10, seed=seed, k=5)

    bank = fitted(0)
    assert [tuple(p.shape) for p in bank.prototypes] == [(5, c, 1, 1) for c, _, _ in SHAPES]
    assert all(torch.equal(a, b) for a, b in zip(bank.prototypes, fitted(0).prototypes))
    residuals = bank.residuals(_feature_batches(3, 3, seed=9)[0])
    assert [tuple(r.shape) for r in residuals] == [(3, *s) for s in SHAPES]
    fresh = PrototypeBank(SHAPES, matching="patch")
    fresh.load_state_dict(bank.state_dict())
    for a, b in zip(fresh.residuals(_feature_batches(3, 3, seed=9)[0]), residuals):
        torch.testing.assert_close(a, b)


def test_patch_matching_accepts_a_shifted_normal_texture_that_whole_maps_reject():
    """Normal maps are stripes of two vectors; a shifted copy is still normal texture."""
    a, b = torch.rand(4), torch.rand(4) + 1.0
    stripes = torch.stack([a, b] * 4, dim=-1)[:, None, :].expand(4, 8, 8)  # (C, H, W)
    batches = [[stripes.expand(3, 4, 8, 8).clone()]]
    shifted = [torch.roll(batches[0][0][:1], shifts=1, dims=-1)]
    patch = PrototypeBank([(4, 8, 8)], matching="patch").fit(batches, n=3, k=2)
    image = PrototypeBank([(4, 8, 8)]).fit(batches, n=3)
    assert patch.residuals(shifted)[0].max() < 1e-9
    assert image.residuals(shifted)[0].max() > 0.5


def test_patch_bank_rejects_bad_settings():
    with pytest.raises(ValueError, match="matching"):
        PrototypeBank(SHAPES, matching="pixel")
    with pytest.raises(ValueError, match="n must be a positive int"):
        PrototypeBank(SHAPES, matching="patch").fit([], n=0, k=2)
    with pytest.raises(ValueError, match="k >= 1"):
        PrototypeBank(SHAPES, matching="patch").fit(_feature_batches(4, 4), n=4)


def test_num_prototypes_rounds_the_ratio_as_written():
    """0.7 * 45 is 31.499999999999996 in binary; as written it is 31.5, which rounds up."""
    assert num_prototypes(45, 0.7) == 32 and num_prototypes(90, 0.35) == 32
    assert num_prototypes(25, 0.1) == 3 and num_prototypes(714, 0.1) == 71
    with pytest.raises(ValueError, match="ratio must be in"):
        num_prototypes(10, True)
