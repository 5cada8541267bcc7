"""benchmarks/bench_synthesis.py: every preset is measured, bad settings are refused."""

from __future__ import annotations

import pytest

from benchmarks import bench_synthesis
from tests.conftest import expect_usage_error


def test_every_preset_gets_a_row(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench_synthesis, "SHARED", tmp_path)  # the drawn stand-ins: fast
    bench_synthesis.main(["--seconds", "0.05", "--batch", "2"])
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split()[0] for line in lines[2:]]
    assert rows == ["draem", "cutpaste", "prn"]
    assert all(line.endswith("im/s") for line in lines[2:])


@pytest.mark.realdata
def test_real_defects_are_pasted_when_mtd_is_present(shared_data, tmp_path, monkeypatch):
    monkeypatch.setattr(bench_synthesis, "SHARED", shared_data)  # the data the test was given
    folder = bench_synthesis._anomaly_dir(tmp_path)
    images = sorted(folder.glob("*.jpg"))
    assert len(images) == 10
    assert all(image.with_suffix(".png").is_file() for image in images)
    assert {i.name for i in images} <= {
        i.name for i in (shared_data / "mtd" / "MT_Blowhole" / "Imgs").glob("*.jpg")
    }


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--seconds", "0"], "--seconds"),
        (["--seconds", "nan"], "--seconds"),
        (["--batch", "0"], "--batch"),
    ],
)
def test_bad_settings_exit_2_naming_the_option(argv, named, capsys):
    assert named in expect_usage_error(bench_synthesis.main, argv, capsys)
