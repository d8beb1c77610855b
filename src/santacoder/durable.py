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


def make_publishable(path: str | Path) -> None:
    """Give a ``tempfile.mkdtemp`` directory (mode 0700) or ``mkstemp`` file (0600) the mode of any new one (0777
    or 0666 less the umask) before it is renamed into place: shared data (token stores, prepared shards, cached
    tokenizers) must be readable by the other users and jobs that the umask allows."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~umask)
