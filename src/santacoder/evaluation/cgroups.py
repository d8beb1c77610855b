"""Cgroup limits for a sandboxed program, where this machine lets us create cgroups (root on cgroup v1 or v2).

Rlimits bind each process on its own; a cgroup caps the total of a program's whole process tree (memory and
process count), so that many processes under their own limits still cannot exhaust the machine.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


class ProgramCgroup:
    """``with ProgramCgroup(memory_bytes, max_processes) as cg``: cgroups made for one program, removed after it;
    ``cg.procs`` are the files the program's first process writes ``0`` to, to join them (empty: none here)."""

    def __init__(self, memory_bytes: int, max_processes: int):
        self.settings = {"memory": memory_bytes, "pids": max_processes}
        self.dirs: list[Path] = []

    @property
    def procs(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def __enter__(self) -> ProgramCgroup:
        name = f"santacoder-sandbox-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            if (ROOT / "cgroup.controllers").is_file():  # v2: one hierarchy
                enabled = (ROOT / "cgroup.subtree_control").read_text().split()
                if {"memory", "pids"} <= set(enabled):
                    self._make(ROOT / name, {"memory.max": self.settings["memory"], "memory.swap.max": 0,
                                             "pids.max": self.settings["pids"]})  # fmt: skip
            else:  # v1: one hierarchy per controller
                for controller, files in (
                    ("memory", {"memory.limit_in_bytes": self.settings["memory"]}),
                    ("pids", {"pids.max": self.settings["pids"]}),
                ):
                    if os.access(ROOT / controller, os.W_OK):
                        self._make(ROOT / controller / name, files)
        except OSError:
            self.__exit__(None, None, None)
            self.dirs = []
        return self

    def _make(self, directory: Path, files: dict[str, int]) -> None:
        directory.mkdir()
        self.dirs.append(directory)
        for file, value in files.items():
            path = directory / file
            if path.exists():
                path.write_text(str(value))

    def __exit__(self, *exc) -> None:
        for directory in self.dirs:
            for _ in range(50):  # its processes are gone; the kernel may need a moment to release it
                with contextlib.suppress(FileNotFoundError):
                    try:
                        directory.rmdir()
                    except OSError:
                        time.sleep(0.02)
                        continue
                break
