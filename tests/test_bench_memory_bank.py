"""benchmarks/bench_memory_bank.py: few normal images work, bad settings are refused."""

from __future__ import annotations

import pytest

from benchmarks import bench_memory_bank
from tests.conftest import expect_usage_error


@pytest.mark.slow
def test_fewer_normals_than_the_prototype_sample_and_an_unfillable_size(capsys):
    argv = ["--normals", "2", "--sizes", "16", "1024", "--repeats", "1", "--threads", "1"]
    bench_memory_bank.main(argv)
    rows = capsys.readouterr().out.splitlines()[-2:]
    assert rows[0].split()[0] == "16" and "filled" not in rows[0]
    # 2 images give 2 x 256 candidate vectors: the row says so instead of claiming 1024
    assert rows[1].split()[0] == "1024" and rows[1].endswith("(filled 512: every candidate vector)")


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--sizes", "4096", "0"], "--sizes"),
        (["--normals", "0"], "--normals"),
        (["--repeats", "0"], "--repeats"),
        (["--threads", "-1"], "--threads"),
    ],
)
def test_bad_settings_exit_2_naming_the_value(argv, named, capsys):
    assert named in expect_usage_error(bench_memory_bank.main, argv, capsys)
