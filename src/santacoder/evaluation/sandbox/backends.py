"""The two ways a program is put in its namespaces, what each sees, and what each enforces.

- ``bwrap`` (bubblewrap, what Flatpak relies on; preferred where it is installed, version 0.8 or newer for
  ``--size`` and ``--disable-userns``);
- ``unshare`` (util-linux, present nearly everywhere): the same allow-list, limits and seccomp filter, set up by
  ``unshare_setup`` inside the namespaces.

Both see only an allow-list, bound read-only: ``/usr`` and the top-level links or directories into it, the
dynamic linker's cache, and the interpreter's own prefix (pyenv, conda, a venv's base) at its own path;
nothing of any home directory, ``/etc``, ``/run``, the host's ``/tmp`` or the project. ``SANTACODER_SANDBOX``
(``bwrap`` or ``unshare``) picks one.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
RUNNER = (HERE / "runner.py").read_text()
UNSHARE_SETUP = (HERE / "unshare_setup.py").read_text()
NAMES = ("bwrap", "unshare")
MINIMUM_BWRAP = (0, 8, 0)
# the program's whole environment: nothing of the evaluator's (tokens, keys, paths)
ENVIRONMENT = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp/work", "TMPDIR": "/tmp"}
TOP_LEVEL = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
LINKER_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")


class SandboxUnavailable(RuntimeError):
    """A guarantee of the sandbox cannot be enforced here: no code is run."""


@dataclass(frozen=True)
class Backend:
    name: str
    tool: str
    version: str


def interpreter() -> str:
    """The base interpreter by its real path: a venv's ``python`` is a link into a directory the sandbox hides."""
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def interpreter_prefixes() -> list[str]:
    prefixes = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix)}
    prefixes.add(os.path.dirname(os.path.dirname(interpreter())))
    return sorted(prefixes)


@functools.cache  # the same for every program of this process
def allow_list() -> tuple[tuple[str, str, str], ...]:
    """(kind, source, target): ``symlink`` (a usr-merged ``/lib -> usr/lib``) or ``ro-bind`` at the same path."""
    binds: list[tuple[str, str, str]] = []
    bound: list[str] = []
    for path in TOP_LEVEL:
        if os.path.islink(path):
            binds.append(("symlink", os.readlink(path), path))
        elif os.path.isdir(path):
            binds.append(("ro-bind", path, path))
            bound.append(path)
    binds += [("ro-bind", os.path.realpath(path), path) for path in LINKER_FILES if os.path.exists(path)]
    for prefix in interpreter_prefixes():
        if not any(prefix == b or prefix.startswith(b + "/") for b in bound):
            binds.append(("ro-bind", prefix, prefix))
            bound.append(prefix)
    return tuple(binds)


@functools.cache  # asked once per tool, not once per program
def _version(tool: str) -> tuple[int, ...]:
    out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=10).stdout
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
    return tuple(int(x or 0) for x in match.groups()) if match else (0, 0, 0)


def find(name: str | None = None) -> Backend:
    """The backend named (or ``$SANTACODER_SANDBOX``), else bwrap where a recent one is installed, else unshare."""
    name = name or os.environ.get("SANTACODER_SANDBOX") or None
    if name is not None and name not in NAMES:
        raise SandboxUnavailable(f"unknown sandbox backend {name!r}: use one of {', '.join(NAMES)}")
    bwrap = shutil.which("bwrap")
    if name in (None, "bwrap") and bwrap:
        version = _version(bwrap)
        if version >= MINIMUM_BWRAP:
            return Backend("bwrap", bwrap, ".".join(map(str, version)))
        if name == "bwrap":
            raise SandboxUnavailable(f"bubblewrap {'.'.join(map(str, version))} is older than 0.8.0 (no --size)")
    elif name == "bwrap":
        raise SandboxUnavailable("bubblewrap (`bwrap`) is not installed: `apt-get install bubblewrap`")
    unshare = shutil.which("unshare")
    if unshare is None:
        raise SandboxUnavailable("neither bubblewrap (`bwrap`) nor util-linux's `unshare` is installed")
    return Backend("unshare", unshare, ".".join(map(str, _version(unshare))))


def runner_argv(limits, timeout: float, token_fd: int, report_fd: int, max_processes: int) -> list[str]:
    cpu = max(1, int(timeout) + 1)
    numbers = (limits.memory_bytes, max_processes, limits.disk_bytes, limits.open_files, cpu, token_fd, report_fd)
    return [interpreter(), "-I", "-c", RUNNER, *map(str, numbers)]


def command(backend: Backend, runner: list[str], disk_bytes: int, source_fd: int, seccomp_fd: int) -> list[str]:
    """The namespace tool's command line; the program's source and the seccomp filter come through descriptors."""
    if backend.name == "bwrap":
        binds = []
        for kind, source, target in allow_list():
            binds += ["--symlink", source, target] if kind == "symlink" else ["--ro-bind", source, target]
        env = [arg for key, value in ENVIRONMENT.items() for arg in ("--setenv", key, value)]
        return [
            backend.tool, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
            "--new-session", "--hostname", "sandbox", "--clearenv", *env, *binds,
            "--proc", "/proc", "--dev", "/dev", "--size", str(disk_bytes), "--tmpfs", "/tmp",
            "--dir", "/tmp/work", "--chmod", "0777", "/tmp/work", "--file", str(source_fd), "/tmp/work/program.py",
            "--remount-ro", "/", "--chdir", "/tmp/work", "--seccomp", str(seccomp_fd), "--", *runner,
        ]  # fmt: skip
    settings = {
        "binds": list(allow_list()), "disk": disk_bytes, "source_fd": source_fd, "argv": runner, "env": ENVIRONMENT,
        "seccomp": os.pread(seccomp_fd, 1 << 16, 0).hex(),
    }  # fmt: skip
    flags = ["--user", "--map-root-user", "--pid", "--fork", "--kill-child", "--mount", "--net", "--ipc", "--uts",
             "--cgroup"]  # fmt: skip
    return [backend.tool, *flags, "--", interpreter(), "-I", "-S", "-c", UNSHARE_SETUP, json.dumps(settings)]
