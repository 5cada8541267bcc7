"""benchmarks/patchcore_baseline.py: the memory bank alone finds a visible defect."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import patchcore_baseline
from benchmarks.patchcore_baseline import score_split
from prn_model.backbones import create_backbone
from prn_model.data import NORMAL_TYPE, Record


def _tile(path: Path, seed: int, defect: tuple[int, int] | None) -> Record:
    """A 64x64 grey noise tile; ``defect`` (row, col) adds a bright 16x16 square, masked."""
    pixels = np.random.default_rng(seed).normal(110, 8, (64, 64)).clip(0, 255)
    mask = np.zeros((64, 64), np.uint8)
    if defect is not None:
        row, col = defect
        pixels[row : row + 16, col : col + 16] = 250
        mask[row : row + 16, col : col + 16] = 255
    image = path.with_suffix(".png")
    Image.fromarray(pixels.astype(np.uint8)).save(image)
    if defect is None:
        return Record(image, None, 0, NORMAL_TYPE)
    mask_path = path.with_name(path.name + "_mask.png")
    Image.fromarray(mask).save(mask_path)
    return Record(image, mask_path, 1, "Square")


@pytest.fixture
def square_records(tmp_path):
    normals = [_tile(tmp_path / f"normal{i}", i, None) for i in range(24)]
    places = [(8 * (i % 5), 8 * (i // 5)) for i in range(16)]
    defects = [_tile(tmp_path / f"defect{i}", 100 + i, place) for i, place in enumerate(places)]
    return normals + defects


def test_memory_bank_alone_scores_the_split_it_rebuilds(square_records):
    torch.manual_seed(0)
    backbone = create_backbone("efficientnet_lite0", pretrained=False).eval()
    result = score_split(
        square_records,
        seed=0,
        split_by="image",
        backbone=backbone,
        bank_size=64,
        image_size=64,
        top_k=10,
        normalise=False,
    )
    assert list(result["per_defect_type"]) == ["Square"]
    assert result["image_auroc"] > 0.95
    assert result["pixel_auroc"] > 0.9
    for name in ("aupro", "pixel_ap"):
        assert 0.0 <= result[name] <= 1.0


def test_repeated_seeds_are_refused_by_name(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        patchcore_baseline.main(["--root", str(tmp_path), "--seeds", "0", "1", "0", "1", "2"])
    assert exit_info.value.code == 2
    assert "--seeds repeats [0, 1]" in capsys.readouterr().err
