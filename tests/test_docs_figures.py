"""The scripts that regenerate the figures in docs/images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from anomgen.core import derive_seed, registered_transforms
from anomgen.io import read_image
from docs import make_demo_figure, make_preview
from prn_model.train import run
from tests.conftest import expect_usage_error, tiny_train_config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny finished run whose heatmap grids hold two rows each."""
    out = tmp_path_factory.mktemp("figure_runs") / "run"
    run(tiny_train_config(steps=2, heatmaps=2), out)
    return out


def test_demo_figure_puts_the_three_grids_side_by_side(finished_run, tmp_path, capsys):
    out = tmp_path / "figure.png"
    argv = ["--run", str(finished_run), "--rows", "5", "--out", str(out)]
    assert make_demo_figure.main(argv) == 0
    figure = np.asarray(Image.open(out))
    grid = np.asarray(Image.open(finished_run / "heatmaps" / "missed_anomalies.png"))
    side = grid.shape[1] // 2  # 64 px test images, so rows of 128 x 64
    assert figure.shape == (22 + 2 * side, 3 * grid.shape[1] + 2 * 8, 3)  # 5 rows asked, 2 held
    # The middle column is the most-missed grid, row for row.
    np.testing.assert_array_equal(figure[22:, grid.shape[1] + 8 : 2 * grid.shape[1] + 8], grid)
    one_row = make_demo_figure.compose(finished_run, rows=1)
    assert one_row.shape[0] == 22 + side
    assert f"wrote {out}" in capsys.readouterr().out


def test_demo_figure_refuses_a_folder_without_heatmaps_and_bad_rows(tmp_path, capsys):
    out = tmp_path / "figure.png"
    error = expect_usage_error(
        make_demo_figure.main, ["--run", str(tmp_path), "--out", str(out)], capsys
    )
    assert "detected_anomalies.png does not exist" in error and "train_prn.py" in error
    error = expect_usage_error(make_demo_figure.main, ["--rows", "0", "--out", str(out)], capsys)
    assert "--rows must be at least 1, got 0" in error
    assert not out.exists()


def test_demo_figure_refuses_a_png_that_is_no_heatmap_grid(finished_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "heatmaps").mkdir(parents=True)
    for name in make_demo_figure.PANELS:
        source = finished_run / "heatmaps" / f"{name}.png"
        (run_dir / "heatmaps" / f"{name}.png").write_bytes(source.read_bytes())
    Image.new("RGB", (128, 100)).save(run_dir / "heatmaps" / "false_alarms.png")
    error = expect_usage_error(
        make_demo_figure.main, ["--run", str(run_dir), "--out", str(tmp_path / "f.png")], capsys
    )
    assert "false_alarms.png is not a heatmap grid" in error and "(100, 128, 3)" in error


def test_preview_figure_writes_where_it_is_told(tmp_path, capsys):
    out = tmp_path / "preview.png"
    assert make_preview.main(["--out", str(out)]) == 0
    assert Image.open(out).size[0] > 0 and f"wrote {out}" in capsys.readouterr().out


def test_preview_shows_every_synthesis_transform_twice(tmp_path):
    # Compositions, the identity and the few-shot images themselves synthesize nothing.
    not_synthesis = {"Compose", "OneOf", "SomeOf", "RandomApply", "Normal", "RealAnomalyImage"}
    folders = make_preview.write_inputs(tmp_path)
    transform = make_preview.every_strategy(folders)
    names = {type(child).__name__ for child in transform.transforms}
    assert names == set(registered_transforms()) - not_synthesis
    image = read_image(sorted(folders["normal"].iterdir())[0])
    drawn = [
        transform(image, seed=derive_seed(make_preview.SEED, k)).meta["strategy"].split(":")[0]
        for k in range(make_preview.SAMPLES)
    ]
    assert sorted(drawn) == sorted(2 * list(names))
