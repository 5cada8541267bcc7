"""``python -m prn_model.zoo``: the entries and what they were measured to reach."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from prn_model.zoo import get_entry, list_models, main


def test_lists_every_entry_with_its_measured_figures(capsys: pytest.CaptureFixture):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(f"{name}\n" in out for name in list_models())
    entry = get_entry("prn_lite0_mtd_normalised")
    assert f"aupro {entry.results['aupro']}" in out
    assert f"by: {entry.results['command']}" in out
    assert out.rstrip().endswith("is `prn-train`, and recipes/benchmark_mtd.py needs the checkout)")
    split = dict(entry.results["split_by_group"])
    command = split.pop("command")
    figures = ", ".join(f"{metric} {value}" for metric, value in split.items())
    assert f"\n  split by tile: {figures}\n  by: {command}\n" in out
    assert main(["prn_resnet18_mvtec"]) == 0
    assert "measured: not yet" in capsys.readouterr().out


def test_an_unknown_name_is_one_line_and_status_2(capsys: pytest.CaptureFixture):
    assert main(["prn_nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown zoo model 'prn_nope'" in err and err.count("\n") == 1


def test_a_reader_that_leaves_early_gets_no_traceback():
    """`python -m prn_model.zoo | head` must not end in a BrokenPipeError traceback."""
    process = subprocess.Popen(
        [sys.executable, "-m", "prn_model.zoo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )
    process.stdout.close()  # the reader is gone before anything is written
    err = process.stderr.read().decode()
    assert process.wait() == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err
