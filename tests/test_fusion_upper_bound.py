"""The fusion upper bound of benchmarks/fusion_upper_bound.py on hand-made maps."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.fusion_upper_bound import (
    block_mean,
    cross_validated_map,
    pixel_features,
    pixel_metrics,
    two_folds,
)


def test_block_mean_and_its_errors():
    maps = np.arange(16, dtype=float).reshape(1, 4, 4)
    assert block_mean(maps, 2).tolist() == [[[2.5, 4.5], [10.5, 12.5]]]
    with pytest.raises(ValueError, match="--size 3"):
        block_mean(maps, 3)


def test_folds_split_every_type_in_halves():
    types = ["good"] * 6 + ["crack"] * 4 + ["fray"] * 2
    fold = two_folds(types, seed=0)
    for name in ("good", "crack", "fray"):
        members = fold[np.asarray(types) == name]
        assert members.sum() == len(members) // 2


def test_features_with_context_add_local_tile_and_row_columns():
    maps = np.random.default_rng(0).normal(size=(3, 40, 40))
    assert pixel_features(maps, maps, context=False).shape == (3 * 40 * 40, 2)
    features = pixel_features(maps, -maps, context=True)
    assert features.shape == (3 * 40 * 40, 11)
    assert features[:, -1].min() >= 0 and features[:, -1].max() == 1  # distance from the middle row


def test_context_finds_what_a_pixel_alone_cannot():
    """Defect regions raise the maps' local mean by less than a pixel's noise."""
    rng = np.random.default_rng(0)
    n, size = 24, 32
    prn = rng.normal(size=(n, size, size))
    masks = np.zeros((n, size, size), dtype=bool)
    masks[n // 2 :, 8:20, 8:20] = True
    prn[masks] += 0.7
    distance = rng.normal(size=(n, size, size))
    fold = two_folds(["good"] * (n // 2) + ["spot"] * (n // 2), seed=0)
    plain = cross_validated_map(prn, distance, masks, fold, False, 5000, seed=0)
    context = cross_validated_map(prn, distance, masks, fold, True, 5000, seed=0)
    assert pixel_metrics(plain, masks)["pixel_auroc"] < 0.75
    assert pixel_metrics(context, masks)["pixel_auroc"] > 0.9
