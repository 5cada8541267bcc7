"""The real-data benchmark recipe: report writing, errors, and a tiny run on MTD."""

from __future__ import annotations

from pathlib import Path

from recipes.benchmark_mtd import END, START, _write_report, main


def test_report_block_is_replaced_and_the_analysis_kept(tmp_path: Path):
    report = tmp_path / "results.md"
    report.write_text(f"{START}\nold numbers\n{END}\n\n## Analysis\nhand-written\n")
    _write_report(report, "new numbers")
    text = report.read_text()
    assert "new numbers" in text and "old numbers" not in text
    assert text.endswith("## Analysis\nhand-written\n")


def test_missing_root_is_a_clear_error(tmp_path: Path, capsys):
    assert main(["--root", str(tmp_path / "absent"), "--report", str(tmp_path / "r.md")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()


def test_bad_settings_and_a_failing_seed_are_reported(tmp_path: Path, capsys):
    report = tmp_path / "r.md"
    common = ["--root", str(tmp_path), "--report", str(report), "--out", str(tmp_path / "runs")]
    assert main([*common, "--prototype-ratio", "2"]) == 2
    assert "prototype_ratio" in capsys.readouterr().err
    assert main([*common, "--memory-bank-size", "-3"]) == 2
    assert "memory_bank_size" in capsys.readouterr().err
    # An empty folder is no MTD dataset: the seed's process fails, and the benchmark says so
    # instead of waiting forever for its metrics.
    assert main([*common, "--seeds", "3", "--image-size", "64"]) == 1
    assert "seed 3 failed" in capsys.readouterr().err
    assert not report.exists()


def test_tiny_real_mtd_benchmark_writes_every_metric(shared_data: Path, tmp_path: Path):
    report = tmp_path / "results.md"
    args = ["--root", str(shared_data / "mtd"), "--textures", str(shared_data / "dtd")]
    args += ["--image-size", "64", "--steps", "2", "--seeds", "0", "--prototype-matching"]
    args += ["patch", "--attention-divisors", "1", "2", "--seen-position", "source"]
    args += ["--out", str(tmp_path / "runs"), "--report", str(report)]
    assert main(args) == 0
    text = report.read_text()
    assert "patch prototype matching (ratio 0.1), attention divisors 1 2" in text
    assert "pasted at source positions rotated by -90 to 90 degrees" in text
    for defect in ("Blowhole", "Break", "Crack", "Fray", "Uneven"):
        assert f"| {defect} | " in text
    assert (tmp_path / "runs" / "seed0" / "benchmark.json").is_file()
