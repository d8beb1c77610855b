"""Durability on POSIX filesystems: a rename or a new file is in a directory's data, so the directory is fsynced
too. Used by every writer that renames a finished file or directory into place (checkpoints, token stores)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: str | Path) -> None:
    """Make the entries of ``directory`` (a file created in it, a rename into it) durable. Filesystems that refuse
    to open or fsync a directory (some network ones) are left as they are: the rename itself is still atomic."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomically(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` whole: a hidden temporary beside it, fsynced, renamed over it, the directory
    fsynced. A crash leaves the old file or the new one, never a mix (small records: manifests, settings)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
