"""Appearance and mask agreement of benchmarks/check_tile_groups.py on hand-made data."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.check_tile_groups import appearance_vector, group_agreement, mask_iou


def test_appearance_ignores_exposure_and_size():
    rng = np.random.default_rng(0)
    tile = rng.uniform(50, 150, size=(64, 48))
    darker_and_larger = np.kron(0.5 * tile + 10, np.ones((2, 2)))  # other light, other crop size
    a, b = appearance_vector(tile, 16), appearance_vector(darker_and_larger, 16)
    assert a.shape == (256,) and np.linalg.norm(a) == pytest.approx(1.0)
    assert a @ b == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="flat"):
        appearance_vector(np.full((8, 8), 7.0), 4)
    with pytest.raises(ValueError, match=r"shape \(8, 8, 3\)"):
        appearance_vector(np.zeros((8, 8, 3)), 4)


def test_group_agreement_finds_groups_and_misplaced_rows():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(6, 20))
    rows = np.repeat(centres, 2, axis=0) + 0.01 * rng.normal(size=(12, 20))  # six twin pairs
    vectors = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    groups = [i // 2 for i in range(12)]
    result = group_agreement(vectors, groups)
    assert result["nearest_in_group"] == 1.0
    assert result["chance"] == pytest.approx(1 / 11)
    assert result["best_inside"] > result["best_outside"]
    wrong = list(groups)
    wrong[0], wrong[2] = 1, 0  # rows of two pairs swapped: all four now miss their twin
    assert group_agreement(vectors, wrong)["nearest_in_group"] == pytest.approx(8 / 12)
    with pytest.raises(ValueError, match="one group each"):
        group_agreement(vectors, groups[:-1])


def test_mask_iou_per_pair_kind_skips_pairs_of_empty_masks():
    masks = np.zeros((4, 4, 4), dtype=bool)
    masks[0, :2] = True
    masks[1, :1] = True  # half of mask 0: IoU 0.5 with it
    masks[2, 2:] = True  # other group, disjoint from both
    # mask 3 is empty, in the second group: its pair with mask 2 has IoU 0
    inside, outside = mask_iou(masks, ["a", "a", "b", "b"])
    assert inside == pytest.approx(0.25)  # median of 0.5 (a-a) and 0.0 (b-b)
    assert outside == 0.0
    empty = np.zeros((2, 3, 3), dtype=bool)
    assert np.isnan(mask_iou(empty, ["a", "a"])[0])
    with pytest.raises(ValueError, match="bool"):
        mask_iou(masks.astype(np.uint8), ["a", "a", "b", "b"])
