"""The scripts that read MTD from --root: a bad root is a usage error, the default is fixed."""

from __future__ import annotations

import pytest

from benchmarks import check_tile_groups, grey_level_stats, patchcore_baseline
from tests.conftest import DEFAULT_SHARED_DATA, expect_usage_error

SCRIPTS = [check_tile_groups, grey_level_stats, patchcore_baseline]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda module: module.__name__.split(".")[-1])
@pytest.mark.parametrize("kind", ["missing", "file", "empty"])
def test_a_root_that_is_no_mtd_copy_is_a_usage_error(script, kind, tmp_path, capsys):
    root = {"missing": tmp_path / "nothing", "file": tmp_path / "a.txt", "empty": tmp_path}[kind]
    (tmp_path / "a.txt").write_text("not a dataset\n")
    error = expect_usage_error(script.main, ["--root", str(root)], capsys)
    assert "--root" in error and str(root) in error


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda module: module.__name__.split(".")[-1])
def test_the_default_root_does_not_depend_on_the_working_folder(script, tmp_path, monkeypatch):
    roots = []

    def read_mtd(root):
        roots.append(root)
        raise FileNotFoundError(f"MTD root not found: {root}")

    monkeypatch.setattr(script, "read_mtd", read_mtd)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        script.main([])
    assert roots == [DEFAULT_SHARED_DATA / "mtd"]
