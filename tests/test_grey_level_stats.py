"""Grey-level statistics of benchmarks/grey_level_stats.py on hand-made images."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.grey_level_stats import grey_level_stats, summarise


def test_ground_statistics_leave_out_the_dilated_defect():
    image = np.full((10, 10), 50, dtype=np.uint8)
    image[4:6, 4:6] = 250  # a bright defect
    image[4:6, 6] = 200  # its rim, outside the anti-aliased mask but within the margin
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[4:6, 4:6] = 255
    mask[4, 6] = 127  # anti-aliased edge below the threshold: ground
    mean, std, ground_mean, ground_std = grey_level_stats(image, mask, margin=1)
    assert mean == pytest.approx((94 * 50 + 4 * 250 + 2 * 200) / 100)
    assert std > 0
    assert (ground_mean, ground_std) == (50.0, 0.0)
    # Without a margin the rim counts as ground.
    assert grey_level_stats(image, mask, margin=0)[2] == pytest.approx((94 * 50 + 400) / 96)


def test_a_normal_image_is_all_ground_and_a_full_mask_leaves_none():
    image = np.arange(16, dtype=np.uint8).reshape(4, 4)
    stats = grey_level_stats(image, None, margin=3)
    assert stats[0] == stats[2] and stats[1] == stats[3]
    full = grey_level_stats(image, np.full((4, 4), 255, dtype=np.uint8), margin=0)
    assert np.isnan(full[2:]).all() and not np.isnan(full[:2]).any()


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="2-D"):
        grey_level_stats(np.zeros((4, 4, 3)), None, 0)
    with pytest.raises(ValueError, match=r"mask shape \(4, 5\)"):
        grey_level_stats(np.zeros((4, 4)), np.zeros((4, 5)), 0)


def test_summary_ignores_undefined_values():
    assert summarise(np.array([np.nan, np.nan])) == "n/a"
    assert summarise(np.array([1.0, 2.0, 3.0, np.nan])).split()[0] == "2.0"
