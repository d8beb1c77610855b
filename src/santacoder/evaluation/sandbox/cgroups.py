"""Cgroup limits for a sandboxed program, where this machine lets us create cgroups (root on cgroup v1 or v2).

Rlimits bind each process on its own; a cgroup caps the total of a program's whole process tree (memory and
process count), and lists every process of it, whatever namespace, session or group it moved to, so that all
of them can be killed. Each cgroup's name carries the evaluator's PID: a dead evaluator's are removed (their
processes killed) by ``remove_leftovers`` at the next start.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
import uuid
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PREFIX = "santacoder-sandbox-"
NAME = re.compile(rf"{PREFIX}(\d+)-[0-9a-f]+")


def _hierarchies() -> list[tuple[Path, dict[str, str]]]:
    """(parent directory, the limit files to write there: setting name -> file) for each writable hierarchy."""
    if (ROOT / "cgroup.controllers").is_file():  # v2: one hierarchy
        try:
            enabled = set((ROOT / "cgroup.subtree_control").read_text().split())
        except OSError:
            return []
        if {"memory", "pids"} <= enabled and os.access(ROOT, os.W_OK):
            return [(ROOT, {"memory": "memory.max", "swap": "memory.swap.max", "pids": "pids.max"})]
        return []
    found = []
    for controller, files in (("memory", {"memory": "memory.limit_in_bytes"}), ("pids", {"pids": "pids.max"})):
        if os.access(ROOT / controller, os.W_OK):
            found.append((ROOT / controller, files))
    return found


class ProgramCgroup:
    """``with ProgramCgroup(memory_bytes, max_processes) as cg``: cgroups made for one program, its processes
    killed and the cgroups removed after it; ``cg.procs`` are the files the program's first process writes ``0``
    to, to join them (empty: none can be made here)."""

    def __init__(self, memory_bytes: int, max_processes: int):
        self.settings = {"memory": memory_bytes, "swap": 0, "pids": max_processes}
        self.dirs: list[Path] = []

    @staticmethod
    def available() -> bool:
        return bool(_hierarchies())

    @property
    def procs(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def __enter__(self) -> ProgramCgroup:
        name = f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            for parent, files in _hierarchies():
                directory = parent / name
                directory.mkdir()
                self.dirs.append(directory)
                for setting, file in files.items():
                    if (directory / file).exists():
                        (directory / file).write_text(str(self.settings[setting]))
        except OSError:
            self.__exit__(None, None, None)
            self.dirs = []
        return self

    def kill(self) -> None:
        for directory in self.dirs:
            _kill_all(directory)

    def __exit__(self, *exc) -> None:
        for directory in self.dirs:
            _remove(directory)


def _kill_all(directory: Path) -> None:
    """SIGKILL every process listed in the cgroup until it lists none (a fork between reads is caught next)."""
    for _ in range(100):
        try:
            pids = [int(p) for p in (directory / "cgroup.procs").read_text().split()]
        except OSError:
            return
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def _remove(directory: Path) -> None:
    for _ in range(100):  # its processes are gone; the kernel may need a moment to release it
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            _kill_all(directory)
            time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers() -> list[str]:
    """Kill the processes of, and remove, the program cgroups of evaluators that died: the names removed."""
    removed = []
    for parent, _ in _hierarchies():
        for directory in parent.glob(f"{PREFIX}*"):
            match = NAME.fullmatch(directory.name)
            if match and not _alive(int(match.group(1))):
                _kill_all(directory)
                _remove(directory)
                removed.append(str(directory))
    return removed
