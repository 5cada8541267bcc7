"""The real-data benchmark recipe: report writing, errors, and a tiny run on MTD."""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import PIL
import pytest
import torch

from prn_model import zoo
from recipes.benchmark_mtd import (
    END,
    METRICS,
    PAPER_MVTEC,
    START,
    _environment_line,
    _report,
    _write_report,
    main,
    parse_args,
)
from tests.conftest import without_hub_notice
from tests.test_data import make_mtd

ROOT = Path(__file__).resolve().parents[1]


def test_report_block_is_replaced_and_the_analysis_kept(tmp_path: Path):
    report = tmp_path / "results.md"
    report.write_text(f"{START}\nold numbers\n{END}\n\n## Analysis\nhand-written\n")
    _write_report(report, "new numbers")
    text = report.read_text()
    assert "new numbers" in text and "old numbers" not in text
    assert text.endswith("## Analysis\nhand-written\n")


def _fake_run(value: float, per_type: dict[str, float]) -> dict:
    environment = {"device": "cpu", "cpu_capability": "AVX2", "cpu_threads": 1}
    environment |= {k: "1" for k in ("python", "torch", "numpy", "opencv", "anomgen")}
    return {
        **dict.fromkeys(METRICS, value),
        "per_defect_type": {name: dict.fromkeys(METRICS, v) for name, v in per_type.items()},
        "wall_seconds": 1.0,
        "peak_rss_mib": 10.0,
        "environment": environment,
    }


def test_environment_line_names_pillow_and_the_commit_when_recorded():
    run = _fake_run(0.9, {})
    assert "Pillow n/a, anomgen 1." in _environment_line([run])  # a run from before they were
    run["environment"] |= {"pillow": "10.3.0", "git_commit": "0123456789abcdef" * 2 + "01234567"}
    assert _environment_line([run]).endswith("Pillow 10.3.0, anomgen 1, commit 0123456789ab.")


def test_report_std_is_the_sample_one_and_absent_or_undefined_seeds_are_counted(
    tmp_path: Path,
):
    args, _ = parse_args(["--root", str(tmp_path), "--seeds", "0", "1", "2"])
    # Fray's images were all drawn as few-shot anomalies on seed 0; Crack's AUPRO-like NaN.
    runs = [
        _fake_run(0.9, {"Crack": 0.8}),
        _fake_run(0.8, {"Crack": math.nan, "Fray": 0.6}),
        _fake_run(0.7, {"Crack": 0.6, "Fray": 0.4}),
    ]
    text = _report(args, runs, "python recipes/benchmark_mtd.py")
    assert "Sample standard deviation (n - 1)" in text
    assert "Wall time: the seed's run from reading its data to its metrics" in text
    assert "with all normal test images" in text
    assert "| all | 0.8000 ± 0.1000 |" in text  # sample std of 0.9 0.8 0.7 (population: 0.0816)
    assert "| Crack | 0.7000 ± 0.1414 (2 of 3 seeds) |" in text
    assert "| Fray | 0.5000 ± 0.1414 (2 of 3 seeds) |" in text
    one, _ = parse_args(["--root", str(tmp_path), "--seeds", "0"])
    assert "| all | 0.9000 ± n/a |" in _report(one, runs[:1], "python recipes/benchmark_mtd.py")


def test_an_mvtec_report_shows_the_paper_beside_the_run(tmp_path: Path):
    argv = ["--root", str(tmp_path), "--dataset", "mvtec", "--seeds", "0", "1"]
    args, _ = parse_args([*argv, "--category", "bottle"])
    runs = [_fake_run(0.99, {"broken_large": 0.98}), _fake_run(0.97, {"broken_large": 0.96})]
    text = _report(args, runs, "python recipes/benchmark_mtd.py")
    assert "| bottle | 100.0 | 99.4 | n/a | 98.0 ± 1.4 | 98.0 ± 1.4 | 98.0 ± 1.4 |" in text
    assert "Ten-shot protocol: 10 real anomalies" in text
    args, _ = parse_args([*argv, "--category", "bottle", "--n-anomalies", "5"])
    assert "5-shot protocol: 5 real anomalies" in _report(args, runs, "python x.py")
    args, _ = parse_args([*argv, "--category", "widget"])  # no paper figure to show
    assert "paper" not in _report(args, runs, "python recipes/benchmark_mtd.py")
    # The figures are those docs/results.md transcribes, with their source.
    section = (ROOT / "docs" / "results.md").read_text().split("## MVTec AD: the paper")[1]
    rows = re.findall(r"^\| (\w+) \| ([\d.]+) \| ([\d.]+) \|", section, re.M)
    assert {name: (float(i), float(p)) for name, i, p in rows} == PAPER_MVTEC


def test_default_is_the_best_mtd_entry_and_options_override_an_entry(tmp_path: Path):
    root = ["--root", str(tmp_path), "--textures", str(tmp_path)]
    args, settings = parse_args(root)
    assert args.model == "prn_lite0_mtd_normalised"
    expected = zoo.train_config(args.model, root=str(tmp_path), textures=str(tmp_path))
    assert settings == expected.to_dict()
    args, settings = parse_args([*root, "--model", "prn_lite0_mtd", "--memory-bank-size", "64"])
    expected = zoo.train_config("prn_lite0_mtd", root=str(tmp_path), textures=str(tmp_path))
    assert settings == {**expected.to_dict(), "memory_bank_size": 64}
    _, settings = parse_args([*root, "--split-by", "group"])
    default = zoo.train_config(
        "prn_lite0_mtd_normalised", root=str(tmp_path), textures=str(tmp_path)
    )
    assert settings == {**default.to_dict(), "split_by": "group"}
    args, settings = parse_args([*root, "--dataset", "mvtec", "--category", "bottle"])
    assert args.model == "prn_resnet18_mvtec" and settings["backbone"] == "resnet18"
    assert args.report == args.out / "report.md"  # MVTec never replaces the MTD results
    assert settings["dataset"] == "mvtec" and settings["category"] == "bottle"
    # An MVTec AD entry benchmarks on MVTec AD without --dataset; a demo entry needs it.
    args, settings = parse_args(["--root", str(tmp_path), "--model", "prn_resnet18_mvtec"])
    assert args.dataset == settings["dataset"] == "mvtec"
    with pytest.raises(ValueError, match=r"'prn_lite0' trains on the 'demo' dataset"):
        parse_args(["--model", "prn_lite0"])


def test_only_the_published_benchmark_replaces_docs_results(tmp_path: Path):
    """A smoke test or an ablation writes OUT/report.md, never over the published figures."""
    root = ["--root", str(tmp_path), "--textures", str(tmp_path)]
    assert parse_args(root)[0].report.parts[-2:] == ("docs", "results.md")
    out = ["--out", str(tmp_path / "runs")]
    assert parse_args([*root, *out])[0].report.parts[-2:] == ("docs", "results.md")
    for change in (
        ["--steps", "2"],
        ["--seeds", "0"],
        ["--seeds", "0", "1", "3"],
        ["--split-by", "group"],
        ["--model", "prn_lite0_mtd"],
    ):
        args, _ = parse_args([*root, *out, *change])
        assert args.report == tmp_path / "runs" / "report.md", change
    chosen = tmp_path / "mine.md"
    assert parse_args([*root, "--steps", "2", "--report", str(chosen)])[0].report == chosen


def test_a_default_run_without_textures_does_not_replace_docs_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The published figures pasted DTD textures; without ../shared/data/dtd the same command
    trains another mix (the texture strategy falls back to the image's own texture)."""
    import recipes.benchmark_mtd as benchmark

    monkeypatch.setattr(benchmark, "SHARED", tmp_path / "shared")  # no dtd/ there
    args, settings = parse_args(["--root", str(tmp_path), "--out", str(tmp_path / "runs")])
    assert settings["textures"] is None
    assert args.report == tmp_path / "runs" / "report.md"


@pytest.mark.parametrize("seeds", [["0", "0"], ["1", "-1"]])
def test_duplicate_or_negative_seeds_are_refused(tmp_path: Path, seeds: list[str], capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--root", str(tmp_path), "--seeds", *seeds])
    assert exit_info.value.code == 2
    assert f"distinct integers >= 0, got {' '.join(seeds)}" in capsys.readouterr().err


def test_a_bad_report_path_is_refused_before_any_seed_trains(tmp_path: Path, capsys):
    common = ["--root", str(tmp_path), "--out", str(tmp_path / "runs")]
    for report in (tmp_path / "missing" / "r.md", tmp_path):
        assert main([*common, "--report", str(report)]) == 2
        assert "must be a file in an existing folder" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    (tmp_path / "file.txt").write_text("x")
    assert main(["--root", str(tmp_path / "file.txt")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_missing_backbone_weights_are_reported_before_any_seed_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    from prn_model import backbones

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    missing = tmp_path / "nowhere" / "resnet18-f37072fd.pth"
    monkeypatch.setitem(backbones.WEIGHT_URLS, "resnet18", missing.as_uri())
    runs = tmp_path / "runs"
    argv = ["--root", str(tmp_path), "--backbone", "resnet18", "--out", str(runs)]
    assert main(argv) == 2
    err = without_hub_notice(capsys.readouterr().err)
    assert "ImageNet weights for 'resnet18'" in err and err.count("\n") == 1
    assert not runs.exists()


def test_each_zoo_entry_was_measured_by_a_command_that_builds_it(tmp_path: Path):
    """The commands in the zoo (and docs) still mean the settings they measured."""
    paths = ["--root", str(tmp_path), "--textures", str(tmp_path)]
    measured = 0
    for name in zoo.list_models():
        command = zoo.get_entry(name).results.get("command", "")
        if not command.startswith("python recipes/benchmark_mtd.py"):
            continue
        _, settings = parse_args(command.split()[2:] + paths)
        assert (
            settings == zoo.train_config(name, root=str(tmp_path), textures=str(tmp_path)).to_dict()
        )
        measured += 1
    assert measured >= 6


def test_unknown_model_is_a_clear_error(tmp_path: Path, capsys):
    assert main(["--root", str(tmp_path), "--model", "prn_nope"]) == 2
    assert "unknown zoo model 'prn_nope'" in capsys.readouterr().err


def test_missing_root_is_a_clear_error(tmp_path: Path, capsys):
    assert main(["--root", str(tmp_path / "absent"), "--report", str(tmp_path / "r.md")]) == 2
    assert "does not exist" in capsys.readouterr().err
    mvtec = ["--dataset", "mvtec", "--category", "bottle", "--report", str(tmp_path / "r.md")]
    assert main(mvtec) == 2  # MTD's default root would be read as MVTec AD
    assert "--dataset mvtec needs --root" in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()


def test_bad_settings_and_a_failing_seed_are_reported(tmp_path: Path, capsys):
    report = tmp_path / "r.md"
    common = ["--root", str(tmp_path), "--report", str(report), "--out", str(tmp_path / "runs")]
    assert main([*common, "--prototype-ratio", "2"]) == 2
    assert "prototype_ratio" in capsys.readouterr().err
    assert main([*common, "--memory-bank-size", "-3"]) == 2
    assert "memory_bank_size" in capsys.readouterr().err
    assert main([*common, "--simulated", "band", "--band-sides", "up"]) == 2
    assert "band_sides" in capsys.readouterr().err
    assert main([*common, "--simulated", "crack", "--crack-angle", "90", "0"]) == 2
    assert "crack_angle" in capsys.readouterr().err
    # An empty folder is no MTD dataset: the seed's process fails, and the benchmark says so
    # instead of waiting forever for its metrics.
    assert main([*common, "--seeds", "3", "--image-size", "64"]) == 1
    assert "seed 3 failed" in capsys.readouterr().err
    assert not report.exists()


@pytest.mark.realdata
def test_tiny_real_mtd_benchmark_writes_every_metric(shared_data: Path, tmp_path: Path):
    report = tmp_path / "results.md"
    args = ["--root", str(shared_data / "mtd"), "--textures", str(shared_data / "dtd")]
    args += ["--model", "prn_lite0_mtd", "--image-size", "64", "--steps", "2", "--seeds", "0"]
    args += ["--prototype-matching"]
    args += ["patch", "--attention-divisors", "1", "2", "--seen-position", "source"]
    args += ["--simulated", "texture", "band", "crack", "--band-sides", "top", "bottom"]
    args += ["--crack-angle", "80", "100"]
    args += ["--original-weight", "0.5", "--intensity-normalisation", "image"]
    args += ["--augmented-original-weight", "0.5"]
    args += [
        "--encoder-from-stride",
        "16",
        "--prototype-refit-every",
        "1",
        "--head-only-steps",
        "1",
    ]
    args += ["--out", str(tmp_path / "runs"), "--report", str(report)]
    assert main(args) == 0
    text = report.read_text()
    assert "Zoo entry `prn_lite0_mtd` with the command's options." in text
    assert "patch prototype matching (ratio 0.1), attention divisors 1 2" in text
    assert "pasted at source positions rotated by -90 to 90 degrees" in text
    assert "simulated anomalies texture + band + crack (bands from top / bottom; cracks " in text
    assert "heading 80 to 100 degrees), the few-shot anomalous images themselves" in text
    assert "themselves at weight 0.5 (normal 2, seen 1, simulated 1)" in text
    assert "images with a seen or simulated anomaly added on top at weight 0.5" in text
    assert "every image brought to one grey-level mean and contrast before the backbone" in text
    assert "the encoder fine-tuned from stride 16 on at 0.1 x the learning rate" in text
    for defect in ("Blowhole", "Break", "Crack", "Fray", "Uneven"):
        assert f"| {defect} | " in text
    threads = torch.get_num_threads()
    capability = torch.backends.cpu.get_cpu_capability()
    assert f"Environment: CPU ({capability}, {threads} threads); Python " in text
    assert f"torch {torch.__version__}, numpy" in text
    assert f"Pillow {PIL.__version__}, anomgen" in text
    # Strict JSON: an undefined metric would be null, never a bare NaN.
    saved = (tmp_path / "runs" / "seed0" / "benchmark.json").read_text()
    assert json.loads(saved, parse_constant=pytest.fail)["image_auroc"] > 0


def _seed_processes(parent: int) -> list[int]:
    """PIDs of the multiprocessing children of ``parent`` that run a seed."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        if ppid == parent and b"spawn_main" in command:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads processes from /proc")
def test_killing_the_benchmark_stops_the_running_seed(tmp_path: Path):
    root = make_mtd(tmp_path / "mtd", {"Free": 8, "Crack": 4})
    command = [sys.executable, "recipes/benchmark_mtd.py", "--root", str(root), "--seeds", "0"]
    command += ["--image-size", "64", "--steps", "100000", "--n-anomalies", "1"]
    command += ["--out", str(tmp_path / "runs")]
    command += ["--report", str(tmp_path / "r.md")]
    benchmark = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (seeds := _seed_processes(benchmark.pid)) and time.monotonic() < deadline:
            assert benchmark.poll() is None, "the benchmark ended before its seed started"
            time.sleep(0.2)
        assert seeds, "no seed process started"
        benchmark.send_signal(signal.SIGTERM)
        assert benchmark.wait(timeout=60) == 128 + signal.SIGTERM
        assert not any(Path(f"/proc/{pid}").exists() for pid in seeds)
    finally:
        benchmark.kill()
    assert not (tmp_path / "r.md").exists()
