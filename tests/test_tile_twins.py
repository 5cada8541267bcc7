"""The tile-leak counts of benchmarks/tile_twins.py on a tiled MTD layout."""

from __future__ import annotations

from benchmarks.tile_twins import drawn_tile_twins, tile_leaks
from prn_model.data import make_split
from tests.test_data import tiled_records  # noqa: F401  (fixture)


def test_image_split_leaks_tiles_and_the_group_split_does_not(tiled_records):  # noqa: F811
    by_image = make_split(tiled_records, n_anomalies=2, seed=0)
    leaks = tile_leaks(by_image)
    # 24 normal images of 8 tiles (3 lightings each), 6 of them in the test set: seed 0 puts
    # the other lightings of every test image's tile into training.
    assert leaks["test normals"] == 6 and leaks["test normals with their tile in training"] == 6
    twins = drawn_tile_twins(by_image)
    drawn = {r.group for r in by_image.few_shot}
    assert [r for r, twin in zip(by_image.test, twins) if twin] == [
        r for r in by_image.test if r.label == 1 and r.group in drawn
    ]
    assert leaks["test anomalies of a few-shot tile"] == int(twins.sum()) >= 2
    by_group = make_split(tiled_records, n_anomalies=2, seed=0, split_by="group")
    assert tile_leaks(by_group) == {
        "test normals": 6,
        "test normals with their tile in training": 0,
        "test anomalies": 18 - 2 * 3,
        "test anomalies of a few-shot tile": 0,
    }
