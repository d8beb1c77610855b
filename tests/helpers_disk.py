"""A file that fails part-way as a full disk does, for tests of what a failed write leaves behind."""

from pathlib import Path


class FailingWriter:
    """A file that accepts ``limit`` bytes and then fails as a full disk does."""

    def __init__(self, path: Path, limit: int):
        self.file = open(path, "wb")  # noqa: SIM115 (closed in __exit__)
        self.limit = limit

    def write(self, data) -> int:
        if self.file.tell() + len(memoryview(data).cast("B")) > self.limit:
            self.file.write(bytes(memoryview(data).cast("B")[: max(0, self.limit - self.file.tell())]))
            raise OSError(28, "No space left on device (injected)")
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()
