"""The checkpoint-taking benchmark scripts: bad paths and settings are one-line usage errors,
and the maps they score are the model's own (benchmarks/_cli.py's ``load_run``)."""

from __future__ import annotations

import argparse
import importlib

import pytest

from prn_model.train import run
from tests.conftest import expect_usage_error, mixed_channel_folder, tiny_train_config

SCRIPTS = (
    "ablate_flip_tta",
    "ablate_map_smoothing",
    "ablate_top_k",
    "analyse_image_errors",
    "analyse_pixel_errors",
    "fusion_upper_bound",
    "sweep_memory_bank_weight",
    "tile_twins",
)


@pytest.fixture(scope="module")
def bank_run(tmp_path_factory):
    """A finished tiny run with a memory bank: its checkpoint and its metrics."""
    out = tmp_path_factory.mktemp("bench_runs") / "bank"
    metrics = run(tiny_train_config(memory_bank_size=40, steps=2, heatmaps=1), out)
    return out / "checkpoint.pt", metrics


@pytest.fixture(scope="module")
def unfinished_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_runs") / "unfinished"
    run(tiny_train_config(steps=4, stop_at_step=2, heatmaps=1), out)
    return out / "checkpoint.pt"


def usage_error(script: str, argv: list[str], capsys) -> str:
    """The one error line of ``benchmarks/<script>.py``'s main (see ``expect_usage_error``)."""
    return expect_usage_error(importlib.import_module(f"benchmarks.{script}").main, argv, capsys)


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "does not exist"),
        ("folder", "is a folder"),
        ("text", "is not a PRN checkpoint"),
        ("unfinished", "unfinished run"),
    ],
)
def test_a_path_that_is_no_finished_checkpoint_is_a_usage_error(
    script, kind, message, tmp_path, capsys, request
):
    paths = {"missing": tmp_path / "nothing.pt", "folder": tmp_path, "text": tmp_path / "a.txt"}
    paths["text"].write_text("not a checkpoint\n")
    path = request.getfixturevalue("unfinished_checkpoint") if kind == "unfinished" else paths[kind]
    error = usage_error(script, [str(path)], capsys)
    assert message in error and str(path) in error


def test_flip_tta_plain_row_is_the_runs_own_metrics(bank_run):
    from benchmarks._cli import load_run
    from benchmarks.ablate_flip_tta import flip_metrics

    checkpoint, metrics = bank_run
    model, config, split = load_run(argparse.ArgumentParser(), checkpoint)
    plain = flip_metrics(model, config, split)["plain"]
    for name in ("image_auroc", "pixel_auroc", "aupro", "pixel_ap"):
        assert plain[name] == pytest.approx(metrics[name], abs=1e-6), name


def test_unsmoothed_row_is_the_runs_own_metrics_and_blurring_changes_the_maps(bank_run):
    from benchmarks._cli import load_run
    from benchmarks.ablate_map_smoothing import smoothing_metrics

    checkpoint, metrics = bank_run
    model, config, split = load_run(argparse.ArgumentParser(), checkpoint)
    rows = smoothing_metrics(model, config, split, [0.0, 4.0])
    for name in ("image_auroc", "pixel_auroc", "aupro", "pixel_ap"):
        assert rows[0.0][name] == pytest.approx(metrics[name], abs=1e-6), name
    assert rows[4.0]["pixel_auroc"] != rows[0.0]["pixel_auroc"]


@pytest.mark.parametrize("sigmas", [["-1"], ["nan"], ["2", "2"]])
def test_bad_sigmas_are_refused_before_any_map(sigmas, tmp_path, capsys):
    argv = [str(tmp_path / "unread.pt"), "--sigmas", *sigmas]
    assert "--sigmas" in usage_error("ablate_map_smoothing", argv, capsys)


@pytest.mark.parametrize("k", ["0", "-3"])
def test_top_k_below_one_is_refused_before_any_map(k, tmp_path, capsys):
    error = usage_error("ablate_top_k", [str(tmp_path / "unread.pt"), "--k", "10", k], capsys)
    assert "--k" in error and k in error


def test_pixel_errors_refuse_a_bank_weight_without_a_bank(tiny_checkpoint, capsys):
    error = usage_error(
        "analyse_pixel_errors", [str(tiny_checkpoint), "--bank-weight", "0.3"], capsys
    )
    assert "--bank-weight needs a memory bank" in error and str(tiny_checkpoint) in error


def test_pixel_errors_refuse_the_checkpoint_as_its_own_ensemble(bank_run, capsys):
    checkpoint = bank_run[0]
    same = checkpoint.parent / ".." / checkpoint.parent.name / checkpoint.name
    error = usage_error("analyse_pixel_errors", [str(checkpoint), "--ensemble", str(same)], capsys)
    assert "--ensemble" in error and "checkpoint itself" in error


def test_pixel_errors_name_a_bad_ensemble_path(bank_run, tmp_path, capsys):
    missing = tmp_path / "other.pt"
    error = usage_error(
        "analyse_pixel_errors", [str(bank_run[0]), "--ensemble", str(missing)], capsys
    )
    assert str(missing) in error and "does not exist" in error


def test_fusion_size_must_divide_the_image_size_before_any_map(bank_run, capsys):
    error = usage_error("fusion_upper_bound", [str(bank_run[0])], capsys)  # --size 128, 64 px
    assert "--size 128 must divide the image size 64" in error


def test_fusion_needs_a_memory_bank(tiny_checkpoint, capsys):
    error = usage_error("fusion_upper_bound", [str(tiny_checkpoint), "--size", "8"], capsys)
    assert "has no memory bank" in error


def test_sweep_adds_a_bank_to_a_checked_model(tiny_checkpoint, capsys):
    from benchmarks.sweep_memory_bank_weight import main

    main([str(tiny_checkpoint), "--weights", "0", "0.5", "--size", "8"])
    out = capsys.readouterr().out
    assert "bank of 8 patch vectors" in out
    rows = [line.split()[0] for line in out.splitlines() if line.lstrip()[:1].isdigit()]
    assert rows[:2] == ["0.00", "0.50"]
    error = usage_error("sweep_memory_bank_weight", [str(tiny_checkpoint), "--size", "0"], capsys)
    assert "--size" in error


def test_scripts_read_a_mixed_grey_and_colour_folder_as_the_model_does(tmp_path, capsys):
    """A folder mixing grey and colour files trains in colour; re-scoring reads it so too."""
    config = tiny_train_config(
        **mixed_channel_folder(tmp_path), n_anomalies=2, steps=2, memory_bank_size=16
    )
    run(config, tmp_path / "run")
    checkpoint = str(tmp_path / "run" / "checkpoint.pt")
    for script, options in [
        ("ablate_flip_tta", []),
        ("ablate_map_smoothing", ["--sigmas", "0"]),
        ("analyse_pixel_errors", []),
        ("sweep_memory_bank_weight", ["--weights", "0.5", "--size", "8"]),
    ]:
        importlib.import_module(f"benchmarks.{script}").main([checkpoint, *options])
        assert "image" in capsys.readouterr().out.lower(), script
