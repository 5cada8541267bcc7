"""The image-error analysis of benchmarks/analyse_image_errors.py, on hand-made maps and on
a tiny run (whose overall image AUROC must be the run's own)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from benchmarks.analyse_image_errors import image_errors, mean_errors, peaks
from prn_model.train import run
from tests.conftest import expect_usage_error, tiny_train_config


def hand_made_maps():
    """Four normal maps (one with a hot corner) and three anomalous ones: a crack found
    strongly, a crack found weakly on its mask, and a blowhole whose map peaks far away."""
    maps = np.zeros((7, 32, 32))
    masks = np.zeros((7, 32, 32), dtype=bool)
    for i, level in enumerate((0.1, 0.2, 0.3)):
        maps[i, 16, 16] = level
    maps[3, 0, 31] = 0.9  # a false alarm at the top-right corner
    masks[4:7, 10:20, 10] = True
    maps[4, 15, 10] = 0.95
    maps[5, 12, 11] = 0.22  # on the crack, but below half of the normal images
    maps[6, 30, 30] = 0.05  # missed, and peaking far from its mask
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    types = ["good"] * 4 + ["crack", "crack", "blowhole"]
    return maps, masks, labels, types


def test_peaks_are_row_and_column_of_each_maximum():
    maps, *_ = hand_made_maps()
    assert peaks(maps).tolist()[3:6] == [[0, 31], [15, 10], [12, 11]]


def test_missed_images_and_where_their_maps_peak():
    maps, masks, labels, types = hand_made_maps()
    scores = maps.reshape(7, -1).max(axis=1)
    errors = image_errors(scores, maps, masks, labels, types, quantile=0.5, margin=2)
    # the normal scores' median is 0.25: the weak crack and the blowhole are missed
    crack, blowhole, every = (errors.per_type[name] for name in ("crack", "blowhole", "all"))
    assert (crack.images, crack.image_auroc, crack.missed) == (2.0, 0.75, 0.5)
    assert crack.missed_peak_on_defect == 1.0
    assert (blowhole.images, blowhole.image_auroc, blowhole.missed) == (1.0, 0.0, 1.0)
    assert blowhole.missed_peak_on_defect == 0.0
    assert (every.images, every.missed, every.missed_peak_on_defect) == (3.0, 2 / 3, 0.5)
    assert every.image_auroc == pytest.approx((4 + 2 + 0) / 12)
    # the crack loses 2 of 8 comparisons, the blowhole all 4: shares 2/6 and 4/6 of the loss
    assert crack.share_of_loss == pytest.approx(1 / 3)
    assert blowhole.share_of_loss == pytest.approx(2 / 3) and every.share_of_loss == 1.0
    # normal images above 0.25: 0.3 (peak at the centre) and the corner alarm
    assert errors.false_alarms == 2 and errors.false_alarms_at_border == 0.5
    assert errors.border_band_area == pytest.approx(1 - 28 * 28 / (32 * 32))


def test_no_missed_image_leaves_its_peak_share_undefined_and_the_mean_skips_it():
    maps, masks, labels, types = hand_made_maps()
    scores = maps.reshape(7, -1).max(axis=1)
    found = image_errors(scores, maps, masks, labels, types, quantile=0.01, margin=2)
    assert found.per_type["crack"].missed == 0.0
    assert np.isnan(found.per_type["crack"].missed_peak_on_defect)
    missed = image_errors(scores, maps, masks, labels, types, quantile=0.5, margin=2)
    mean = mean_errors([found, missed]).per_type["crack"]
    assert mean.missed == 0.25 and mean.missed_peak_on_defect == 1.0


def test_a_tiny_runs_overall_image_auroc_is_its_own(tmp_path, capsys):
    out = tmp_path / "run"
    metrics = run(tiny_train_config(memory_bank_size=16, steps=2), out)
    module = importlib.import_module("benchmarks.analyse_image_errors")
    module.main([str(out / "checkpoint.pt"), "--list", "2"])
    printed = capsys.readouterr().out
    overall = next(line for line in printed.splitlines() if line.split()[:1] == ["all"])
    assert float(overall.split()[2]) == pytest.approx(metrics["image_auroc"], abs=1e-4)
    assert "lowest anomalous" in printed and "highest normal" in printed


@pytest.mark.parametrize(
    "options, name",
    [
        (["--quantile", "1"], "--quantile"),
        (["--margin", "0"], "--margin"),
        (["--list", "-1"], "--list"),
    ],
)
def test_bad_settings_are_refused_before_any_map(options, name, tmp_path, capsys):
    main = importlib.import_module("benchmarks.analyse_image_errors").main
    assert name in expect_usage_error(main, [str(tmp_path / "unread.pt"), *options], capsys)


def test_a_checkpoint_given_twice_is_refused(tmp_path, capsys):
    main = importlib.import_module("benchmarks.analyse_image_errors").main
    path = str(tmp_path / "a.pt")
    assert "twice" in expect_usage_error(main, [path, path], capsys)
