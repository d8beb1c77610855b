"""Temporary files of data preparation, named after the host and process that write them, so that the next
start can tell litter left by a killed preparation from a preparation still running (on this machine, or on
another one sharing the cache directory)."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from pathlib import Path

log = logging.getLogger(__name__)

TMP_MARK = ".tmp-"
# Another machine's process cannot be asked whether it still runs: its leftovers go once nothing in them has
# changed for this long (a preparation writes its files continuously).
STALE_AFTER_S = 24 * 3600


def temporary_prefix(final: Path) -> str:
    """Prefix for ``tempfile.mkstemp``/``mkdtemp`` of a file or directory that will be renamed to ``final``."""
    return f"{final.name}{TMP_MARK}{socket.gethostname()}-{os.getpid()}-"


def _writer(name: str) -> tuple[str, int] | None:
    """(host, pid) from a temporary name (the random suffix that tempfile adds has no '-'), or None."""
    try:
        host, pid, _ = name.split(TMP_MARK, 1)[1].rsplit("-", 2)
        return host, int(pid)
    except ValueError:
        return None


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _last_change(path: Path) -> float:
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    return max(p.lstat().st_mtime for p in paths)


def is_stale(path: Path) -> bool:
    writer = _writer(path.name)
    if writer is not None and writer[0] == socket.gethostname():
        return writer[1] != os.getpid() and not _is_running(writer[1])
    return time.time() - _last_change(path) > STALE_AFTER_S


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete what killed preparations left in ``directory``; a running one's temporaries stay."""
    directory = Path(directory)
    removed = []
    for path in sorted(directory.glob(f"*{TMP_MARK}*")) if directory.is_dir() else []:
        try:
            if not is_stale(path):
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:  # its writer finished (renamed it) or another cleaner was first
            continue
        log.warning("removed %s, left by an interrupted data preparation", path)
        removed.append(path)
    return removed
