"""Download and unpack MVTec AD and Magnetic Tile Defect from their official addresses.

The archive is streamed to a temporary file, checked against the known checksum before
anything is unpacked, unpacked into a temporary folder that is renamed into place only when
complete, and deleted afterwards. A finished download leaves a marker file, so running again
does nothing. Archive members that would land outside the target folder are rejected.

Usage: ``python -m prn_model.download {mvtec,mtd} --root DIR``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

MARKER = ".prn_download.json"
_CHUNK = 1 << 20
_HEX_LENGTHS = {"md5": 32, "sha256": 64}


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset lives and how to check it; a checksum of None means 'not known'."""

    url: str
    folder: str  # unpacked under <root>/<folder>
    md5: str | None = None
    sha256: str | None = None
    strip_top_dir: bool = False  # archive wraps everything in one folder (GitHub archives)
    terms: str = ""


DATASETS: dict[str, DatasetSource] = {
    "mvtec": DatasetSource(
        url=(
            "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/"
            "420938113-1629952094/mvtec_anomaly_detection.tar.xz"
        ),
        folder="mvtec_anomaly_detection",
        # md5 as in anomalib < 1.0 and torchvision-based loaders; sha256 as in current anomalib.
        md5="eefca59f2cede9c3fc5b6befbfec275e",
        sha256="cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d",
        terms="MVTec AD is licensed CC BY-NC-SA 4.0 (non-commercial use only).",
    ),
    "mtd": DatasetSource(
        url="https://github.com/abin24/Magnetic-tile-defect-datasets./archive/cc4eb530b57b.zip",
        folder="mtd",
        # GitHub builds archives on request, so no stable published checksum exists.
        strip_top_dir=True,
        terms=(
            "Magnetic Tile Defect (Huang, Qiu, Yuan, The Visual Computer 2018): academic use; "
            "cite the paper."
        ),
    ),
}


class ChecksumError(ValueError):
    """The downloaded archive does not match the expected checksum."""


def _parse_checksum(checksum: str) -> tuple[str, str]:
    """Accept ``md5:<hex>``, ``sha256:<hex>`` or a bare md5/sha256 hex digest."""
    algorithm, _, digest = checksum.strip().lower().rpartition(":")
    if not algorithm:
        algorithm = next((a for a, n in _HEX_LENGTHS.items() if n == len(digest)), "")
    valid_hex = all(c in "0123456789abcdef" for c in digest)
    if algorithm not in _HEX_LENGTHS or len(digest) != _HEX_LENGTHS[algorithm] or not valid_hex:
        raise ValueError(
            f"checksum {checksum!r} is not md5:<32 hex>, sha256:<64 hex> or a bare md5/sha256"
        )
    return algorithm, digest


def _expected_checksums(source: DatasetSource, checksum: str | None) -> dict[str, str]:
    if checksum is not None:
        algorithm, digest = _parse_checksum(checksum)
        return {algorithm: digest}
    known = {"md5": source.md5, "sha256": source.sha256}
    return {algorithm: digest for algorithm, digest in known.items() if digest}


def _stream(url: str, destination: Path, algorithms: set[str]) -> dict[str, str]:
    """Copy ``url`` to ``destination`` and return the hex digests computed on the way."""
    hashers = {algorithm: hashlib.new(algorithm) for algorithm in algorithms}
    try:
        response = urllib.request.urlopen(url, timeout=60)
    except (urllib.error.URLError, ValueError) as error:
        raise ConnectionError(f"could not download {url}: {error}") from error
    with response, destination.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        name = url.rsplit("/", 1)[-1]
        with tqdm(total=total, unit="B", unit_scale=True, desc=name) as progress:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                for hasher in hashers.values():
                    hasher.update(chunk)
                progress.update(len(chunk))
    return {algorithm: hasher.hexdigest() for algorithm, hasher in hashers.items()}


def _check_member(name: str, archive: Path) -> None:
    """Reject absolute paths, drive letters and '..' so nothing lands outside the target."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise ValueError(f"unsafe path {name!r} in archive {archive} (path traversal), refusing")


def _extract(archive: Path, destination: Path) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            for name in zipped.namelist():
                _check_member(name, archive)
            zipped.extractall(destination)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                _check_member(member.name, archive)
                if not (member.isfile() or member.isdir()):
                    raise ValueError(
                        f"archive {archive} holds {member.name!r}, which is not a plain file "
                        "or folder (links and devices are refused)"
                    )
            tar.extractall(destination, filter="data")
    else:
        raise ValueError(f"{archive} is neither a zip nor a tar archive")


def _single_top_dir(folder: Path, archive_url: str) -> Path:
    entries = list(folder.iterdir())
    if len(entries) != 1 or not entries[0].is_dir():
        raise ValueError(f"archive {archive_url} does not hold exactly one top-level folder")
    return entries[0]


def download_dataset(
    name: str, root: str | Path, url: str | None = None, checksum: str | None = None
) -> Path:
    """Download, verify and unpack dataset ``name`` into ``root``; return the dataset folder.

    ``url``/``checksum`` override the registry (``checksum`` as ``md5:<hex>``, ``sha256:<hex>``
    or bare hex). When no checksum is known the computed sha256 is printed and a warning says
    the archive was not verified. The returned folder is what :func:`prn_model.data.read_mvtec`
    (with a category) or :func:`prn_model.data.read_mtd` expects.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(DATASETS))}")
    source = DATASETS[name]
    url = url or source.url
    root = Path(root)
    target = root / source.folder
    if (target / MARKER).is_file():
        return target
    if target.exists():
        raise FileExistsError(
            f"{target} exists but was not completed by this downloader; remove it or use it as is"
        )
    expected = _expected_checksums(source, checksum)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}-download-") as scratch:
        archive = Path(scratch) / "archive"
        digests = _stream(url, archive, set(expected) | {"sha256"})
        for algorithm, digest in expected.items():
            if digests[algorithm] != digest:
                raise ChecksumError(
                    f"{algorithm} of {url} is {digests[algorithm]}, expected {digest}; "
                    "the download is corrupt or the file changed, nothing was kept"
                )
        if not expected:
            print(f"sha256 of {url}: {digests['sha256']}")
            warnings.warn(
                f"no known checksum for {name}: the archive was NOT verified "
                f"(its sha256 is {digests['sha256']})",
                stacklevel=2,
            )
        unpacked = Path(scratch) / "unpacked"
        unpacked.mkdir()
        _extract(archive, unpacked)
        content = _single_top_dir(unpacked, url) if source.strip_top_dir else unpacked
        record = {"name": name, "url": url, "sha256": digests["sha256"], "verified": expected}
        (content / MARKER).write_text(json.dumps(record, indent=2))
        content.rename(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m prn_model.download", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--root", type=Path, required=True, help="folder to unpack into")
    parser.add_argument("--url", help="mirror address instead of the official one")
    parser.add_argument("--checksum", help="md5:<hex> or sha256:<hex> to verify instead")
    args = parser.parse_args(argv)
    print(DATASETS[args.dataset].terms)
    try:
        path = download_dataset(args.dataset, args.root, url=args.url, checksum=args.checksum)
    except (ValueError, OSError) as error:  # offline (ConnectionError), checksum, bad archive
        print(f"prn_model.download: error: {error}", file=sys.stderr)
        return 2
    print(f"{args.dataset} ready at {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
