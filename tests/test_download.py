"""Downloader: checksum, safe extraction and idempotence, on local file:// archives."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from prn_model.data import read_mtd, read_mvtec
from prn_model.download import DATASETS, ChecksumError, download_dataset, main


def add_bytes(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def png_bytes(value: int = 120) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (6, 4), value).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def mvtec_archive(tmp_path) -> Path:
    """A tiny MVTec-like .tar.xz: categories at the top level, as in the real archive."""
    archive = tmp_path / "src" / "mvtec_anomaly_detection.tar.xz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:xz") as tar:
        add_bytes(tar, "widget/train/good/000.png", png_bytes())
        add_bytes(tar, "widget/test/good/000.png", png_bytes())
        add_bytes(tar, "widget/test/dent/000.png", png_bytes())
        add_bytes(tar, "widget/ground_truth/dent/000_mask.png", png_bytes(255))
        add_bytes(tar, "readme.txt", b"demo")
    return archive


def digest(path: Path, algorithm: str) -> str:
    return hashlib.new(algorithm, path.read_bytes()).hexdigest()


def test_download_verifies_and_extracts(tmp_path, mvtec_archive):
    root = tmp_path / "data"
    md5 = digest(mvtec_archive, "md5")
    path = download_dataset("mvtec", root, url=mvtec_archive.as_uri(), checksum=f"md5:{md5}")
    assert path == root / "mvtec_anomaly_detection"
    assert len(read_mvtec(path, "widget")) == 3
    assert sorted(p.name for p in root.iterdir()) == ["mvtec_anomaly_detection"]  # no leftovers


def test_checksum_mismatch_removes_everything(tmp_path, mvtec_archive):
    root = tmp_path / "data"
    wrong = "0" * 64
    with pytest.raises(ChecksumError, match="expected 0000"):
        download_dataset("mvtec", root, url=mvtec_archive.as_uri(), checksum=wrong)
    assert list(root.iterdir()) == []
    # A mirror URL is still checked against the registry's official checksum.
    with pytest.raises(ChecksumError, match=DATASETS["mvtec"].md5):
        download_dataset("mvtec", root, url=mvtec_archive.as_uri())
    assert list(root.iterdir()) == []


def test_download_is_idempotent(tmp_path, mvtec_archive):
    root = tmp_path / "data"
    sha256 = digest(mvtec_archive, "sha256")
    first = download_dataset("mvtec", root, url=mvtec_archive.as_uri(), checksum=sha256)
    (first / "widget/train/good/000.png").write_bytes(b"kept")
    # A second call must not touch the network (the URL does not even exist) nor re-extract.
    again = download_dataset("mvtec", root, url=(tmp_path / "gone.tar.xz").as_uri())
    assert again == first
    assert (first / "widget/train/good/000.png").read_bytes() == b"kept"


def test_path_traversal_is_rejected(tmp_path):
    archive = tmp_path / "evil.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        add_bytes(tar, "widget/ok.txt", b"fine")
        add_bytes(tar, "../escaped.txt", b"evil")
    root = tmp_path / "data"
    with pytest.raises(ValueError, match="traversal"):
        download_dataset("mvtec", root, url=archive.as_uri(), checksum=digest(archive, "md5"))
    assert not (tmp_path / "escaped.txt").exists()
    assert list(root.iterdir()) == []

    zipped = tmp_path / "evil.zip"
    with zipfile.ZipFile(zipped, "w") as archive_zip:
        archive_zip.writestr("top/MT_Free/Imgs/a.jpg", b"x")
        archive_zip.writestr("/abs/escaped.txt", b"evil")
    with pytest.raises(ValueError, match="traversal"):
        download_dataset("mtd", root, url=zipped.as_uri(), checksum=digest(zipped, "md5"))
    assert list(root.iterdir()) == []


def test_links_in_tar_are_rejected(tmp_path):
    archive = tmp_path / "link.tar"
    with tarfile.open(archive, "w") as tar:
        link = tarfile.TarInfo("widget/passwd")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(ValueError, match="not a plain file"):
        download_dataset(
            "mvtec", tmp_path / "data", url=archive.as_uri(), checksum=digest(archive, "md5")
        )


def make_mtd_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        top = "Magnetic-tile-defect-datasets.-cc4eb530b57b"
        archive.writestr(f"{top}/README.md", b"MTD")
        for cls in ("Free", "Crack"):
            archive.writestr(f"{top}/MT_{cls}/Imgs/exp1_num_1.jpg", png_bytes())
            archive.writestr(f"{top}/MT_{cls}/Imgs/exp1_num_1.png", png_bytes(255))
    return path


def test_unknown_checksum_warns_with_computed_sha256(tmp_path, capsys):
    archive = make_mtd_zip(tmp_path / "mtd.zip")
    assert DATASETS["mtd"].sha256 is None and DATASETS["mtd"].md5 is None
    with pytest.warns(UserWarning, match=f"NOT verified.*{digest(archive, 'sha256')}"):
        path = download_dataset("mtd", tmp_path / "data", url=archive.as_uri())
    assert digest(archive, "sha256") in capsys.readouterr().out
    assert path == tmp_path / "data" / "mtd"  # the archive's top folder is stripped
    assert len(read_mtd(path)) == 2


def test_bad_arguments_and_foreign_target(tmp_path, mvtec_archive):
    url = mvtec_archive.as_uri()
    with pytest.raises(ValueError, match="unknown dataset 'visa'"):
        download_dataset("visa", tmp_path)
    with pytest.raises(ValueError, match="checksum"):
        download_dataset("mvtec", tmp_path / "a", url=url, checksum="md5:xyz")
    with pytest.raises(ConnectionError, match="missing.tar.xz"):
        download_dataset("mvtec", tmp_path / "b", url=(tmp_path / "missing.tar.xz").as_uri())
    (tmp_path / "c" / "mvtec_anomaly_detection").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not completed"):
        download_dataset("mvtec", tmp_path / "c", url=url)


def test_registry_points_at_official_sources():
    assert DATASETS["mvtec"].url.startswith("https://www.mydrive.ch/shares/38536/")
    assert DATASETS["mvtec"].md5 == "eefca59f2cede9c3fc5b6befbfec275e"
    assert "abin24/Magnetic-tile-defect-datasets./archive/cc4eb530b57b" in DATASETS["mtd"].url


def test_cli(tmp_path, capsys):
    archive = make_mtd_zip(tmp_path / "mtd.zip")
    sha256 = digest(archive, "sha256")
    args = ["mtd", "--root", str(tmp_path / "data"), "--url", archive.as_uri()]
    assert main([*args, "--checksum", f"sha256:{sha256}"]) == 0
    assert f"ready at {tmp_path / 'data' / 'mtd'}" in capsys.readouterr().out


def test_cli_reports_an_unreachable_archive_or_a_wrong_checksum_in_one_line(tmp_path, capsys):
    missing = ["mtd", "--root", str(tmp_path / "a"), "--url", (tmp_path / "no.zip").as_uri()]
    assert main(missing) == 2
    err = capsys.readouterr().err
    assert err.startswith("prn_model.download: error: could not download") and err.count("\n") == 1
    archive = make_mtd_zip(tmp_path / "mtd.zip")
    wrong = ["mtd", "--root", str(tmp_path / "b"), "--url", archive.as_uri()]
    assert main([*wrong, "--checksum", "sha256:" + "0" * 64]) == 2
    assert "expected 000" in capsys.readouterr().err
    assert not (tmp_path / "b" / "mtd").exists()
