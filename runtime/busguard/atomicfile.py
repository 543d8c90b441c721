"""Files replaced atomically: a reader sees the old file or the new one, never half, and the
new one survives a power cut once the call returns (temp file in the same folder, fsync,
rename, fsync of the folder). Used by the calibration file, ``busguard apply`` (site.toml and
its backups) and the service's status and pid files. :func:`replace_text` is the same without
the fsyncs, for the fake hardware files (1-Wire, IIO, mock GPIO) the simulator and tests
rewrite many times a second: atomic for readers, not durable.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path


def utc_stamp(t: float | None = None, compact: bool = False) -> str:
    dt = datetime.fromtimestamp(t if t is not None else datetime.now(timezone.utc).timestamp(),
                                tz=timezone.utc)
    return dt.strftime("%Y%m%dT%H%M%SZ" if compact else "%Y-%m-%dT%H:%M:%SZ")


def atomic_write(path: str | Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def replace_text(path: str | Path, text: str) -> Path:
    """Replace ``path`` by ``text`` atomically for readers (temp file, rename), without the
    fsyncs of :func:`atomic_write`: for files that are rewritten often and need not survive a
    power cut. Any thread of any process may call it for the same path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="ascii") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in ``folder`` durable (fsync of the folder itself)."""
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def backup(path: str | Path, t: float | None = None) -> Path | None:
    """Copy ``path`` to ``path.<UTC stamp>.bak`` (atomically); None when there is no file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    stamp = utc_stamp(t, compact=True)
    dest = path.with_name(f"{path.name}.{stamp}.bak")
    n = 1
    while dest.exists():
        n += 1
        dest = path.with_name(f"{path.name}.{stamp}-{n}.bak")
    atomic_write(dest, data, mode=path.stat().st_mode & 0o777)
    return dest
