"""SHA-256 checksums of the data files that a ``meta.json`` vouches for (token stores, prepared shards): computed while
a file is written, so a large file is never read twice, and checked by reading it once, streaming."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

# The read size of a check: large enough to stream at disk speed, small enough to hold anywhere.
CHECK_CHUNK_BYTES = 16 * 2**20


def checksum_of(path: str | Path) -> str:
    """``sha256:<hex>`` of the file's content."""
    digest = hashlib.sha256()
    buffer = memoryview(bytearray(CHECK_CHUNK_BYTES))
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(buffer[:n])
    return "sha256:" + digest.hexdigest()


class ChecksummedFile:
    """A binary file for writing that hashes what goes through it (no second pass over the file) and is fsynced
    when closed."""

    def __init__(self, path: str | Path):
        self.file = open(path, "wb")  # noqa: SIM115 (closed in close() or discard())
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.file.write(data)

    def close(self) -> str:
        """Flush, fsync and close the file; its checksum."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
        finally:
            self.file.close()
        return "sha256:" + self.digest.hexdigest()

    def discard(self) -> None:
        """Close without fsync, on failure (a no-op after close())."""
        with contextlib.suppress(OSError):  # flushing to a full disk fails again
            self.file.close()

    def __enter__(self) -> ChecksummedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()
