"""The offline demo dataset: layout, determinism, atomic and idempotent builds."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from prn_model import demo_data
from prn_model.data import load_record, make_split, read_mvtec
from prn_model.demo_data import CATEGORY, MARKER, build_demo_dataset

SMALL = {"n_train": 4, "n_test_good": 3, "n_test_defect": 2, "size": 48}


def files(root):
    target = root / CATEGORY
    return {p.relative_to(target): p.read_bytes() for p in sorted(target.rglob("*.png"))}


def test_layout_reads_as_mvtec(tmp_path):
    root = build_demo_dataset(tmp_path, **SMALL)
    assert root == tmp_path
    records = read_mvtec(root, CATEGORY)
    assert Counter((r.split, r.defect_type) for r in records) == {
        ("train", "good"): 4,
        ("test", "good"): 3,
        ("test", "crack"): 2,
        ("test", "scratch"): 2,
        ("test", "spot"): 2,
    }
    for record in records:
        image, mask = load_record(record)
        assert image.shape == (1, 48, 48)
        assert (mask.sum() > 0) == (record.label == 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CATEGORY]  # no temp folders left
    assert len(make_split(records, n_anomalies=3, seed=0).few_shot) == 3


def test_masks_are_binary_and_mark_visible_changes(tmp_path):
    build_demo_dataset(tmp_path, **SMALL)
    mask_paths = sorted((tmp_path / CATEGORY / "ground_truth").rglob("*_mask.png"))
    assert len(mask_paths) == 3 * SMALL["n_test_defect"]  # every defect image, none skipped
    for mask_path in mask_paths:
        mask = np.asarray(Image.open(mask_path))
        assert set(np.unique(mask)) == {0, 255}
        image_path = tmp_path / CATEGORY / "test" / mask_path.parent.name / "000.png"
        assert np.asarray(Image.open(image_path)).shape == mask.shape


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    first = files(build_demo_dataset(tmp_path / "a", **SMALL, seed=5))
    second = files(build_demo_dataset(tmp_path / "b", **SMALL, seed=5))
    other = files(build_demo_dataset(tmp_path / "c", **SMALL, seed=6))
    assert first == second
    assert first.keys() == other.keys() and first != other


def test_rebuild_is_skipped_when_complete_and_redone_when_arguments_change(tmp_path):
    build_demo_dataset(tmp_path, **SMALL)
    sentinel = tmp_path / CATEGORY / "train/good/000.png"
    sentinel.write_bytes(b"untouched")
    build_demo_dataset(tmp_path, **SMALL)
    assert sentinel.read_bytes() == b"untouched"
    build_demo_dataset(tmp_path, **{**SMALL, "n_train": 5})
    assert sentinel.read_bytes() != b"untouched"
    assert len(list((tmp_path / CATEGORY / "train/good").iterdir())) == 5


def test_a_changed_generator_rebuilds_the_cache(tmp_path, monkeypatch):
    """The marker names the generator's source: with the same arguments, an edited
    demo_data.py (or a marker written before the generator was recorded) rebuilds."""
    build_demo_dataset(tmp_path, **SMALL)
    sentinel = tmp_path / CATEGORY / "train/good/000.png"
    sentinel.write_bytes(b"untouched")
    edited = tmp_path / "demo_data.py"
    shutil.copy(demo_data.__file__, edited)
    edited.write_text(edited.read_text() + "\n# a changed generator\n")
    monkeypatch.setattr(demo_data, "__file__", str(edited))
    build_demo_dataset(tmp_path, **SMALL)
    assert sentinel.read_bytes() != b"untouched"
    marker = tmp_path / CATEGORY / MARKER
    assert json.loads(marker.read_text()) == {
        **SMALL,
        "seed": 0,
        "generator": demo_data.generator_fingerprint(),
    }
    sentinel.write_bytes(b"untouched")
    build_demo_dataset(tmp_path, **SMALL)
    assert sentinel.read_bytes() == b"untouched"  # the same generator reuses its build
    marker.write_text(json.dumps({**SMALL, "seed": 0}))  # as older versions wrote it
    build_demo_dataset(tmp_path, **SMALL)
    assert sentinel.read_bytes() != b"untouched"
    sentinel.write_bytes(b"untouched")
    monkeypatch.setattr(demo_data.cv2, "__version__", "0.0.1")  # a library that paints
    build_demo_dataset(tmp_path, **SMALL)
    assert sentinel.read_bytes() != b"untouched"


def test_refuses_foreign_folder_and_bad_arguments(tmp_path):
    (tmp_path / CATEGORY).mkdir()
    with pytest.raises(FileExistsError, match=CATEGORY):
        build_demo_dataset(tmp_path, **SMALL)
    with pytest.raises(ValueError, match="size"):
        build_demo_dataset(tmp_path / "x", size=8)
    with pytest.raises(ValueError, match="n_test_defect"):
        build_demo_dataset(tmp_path / "x", n_test_defect=0)


def test_default_build(tmp_path):
    records = read_mvtec(build_demo_dataset(tmp_path), CATEGORY)
    assert Counter(r.label for r in records) == {0: 80, 1: 60}
    assert Image.open(records[0].image).size == (128, 128)
