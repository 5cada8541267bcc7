"""Writing files so that a reader never sees half of one.

Every output of prn_model (checkpoints, metrics, CSVs, exports) is written to a temporary file
beside its destination and renamed over it only when the write succeeded; a failed or
interrupted write leaves neither a temporary file nor a changed destination.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["staged_file", "write_text_atomic"]


@contextlib.contextmanager
def staged_file(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` (same suffix, which may name the format) that replaces
    ``path`` only when the block succeeds."""
    handle, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(handle)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through ``staged_file``, synced to disk before the rename."""
    with staged_file(path) as tmp, tmp.open("w", newline="") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
