"""The pixel-error analysis of benchmarks/analyse_pixel_errors.py on hand-made maps."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.analyse_pixel_errors import error_sources


def test_spill_around_a_defect_is_told_apart_from_normal_images():
    maps = np.zeros((3, 8, 8))
    masks = np.zeros((3, 8, 8), dtype=bool)
    masks[2, 2:4, 2:4] = True
    maps[2, 1:5, 1:5] = 0.9  # 12 ground pixels around the defect outrank it
    maps[2, 2:4, 2:4] = 0.8
    maps[2, 7, 7] = 0.5  # one far ground pixel above everything in the normal images
    labels = np.array([0, 0, 1])
    table = error_sources(maps, masks, labels, ["good", "good", "crack"], margin=1)
    every, normal_images, own_ground, far_ground, hot_share = table["crack"]
    assert normal_images == 1.0  # nothing in the normal images scores as high
    assert own_ground == pytest.approx(48 / 60)  # 48 of the 60 ground pixels score lower
    assert every == pytest.approx((64 * 2 + 48) / (64 * 2 + 60))
    assert far_ground == 1.0  # the spill lies within 1 px of the defect
    assert hot_share == pytest.approx(1 / 48)
    assert table["all"] == table["crack"]
