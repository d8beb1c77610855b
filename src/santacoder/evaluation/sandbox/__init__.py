"""Run untrusted generated code so that it can neither harm the machine nor fake a verdict (fail closed).

One run, from the evaluator down (each step in its own file):

- ``prelude``: on the host; joins the program's cgroups (root), leaves root for a uid of the program's own,
  asks to be killed with the evaluator, execs the namespace tool;
- ``backends``: bubblewrap, or ``unshare`` with ``unshare_setup``: new user, PID, mount, network, IPC, UTS and
  cgroup namespaces; a read-only allow-list as the whole filesystem; no capability; ``no_new_privs``; the
  ``seccomp`` filter; a minimal environment;
- ``runner``: sets the rlimits, runs the program, reports success through a channel it cannot forge.

What that enforces, for root and for ordinary users alike (``describe()`` says it for this machine):

- **verdicts**: passed only when the program's test returned (a token the program never holds, read by the
  runner after it): no exit status, early exit or output scores a pass;
- **killed means killed**: at the timeout, or when the evaluator dies, the whole PID namespace dies with its
  trusted PID 1, whatever sessions or groups the program made; nothing waits on a pipe after the kill; a
  dead evaluator's cgroups are removed at the next start;
- **each program its own limits**: processes counted per program (its own user namespace carries its own
  process count, Linux 5.14 and newer; as root also a cgroup and a uid of its own), memory per process
  (address space) and, as root, per program (a cgroup);
- **contained**: no network, no host process to see, signal or trace, no file of the host to write, and none
  to read beyond the interpreter and system libraries; its own size-limited ``/tmp``;
- **bounded for the evaluator**: output is streamed, only its last ``Limits.output_bytes`` kept; the source goes
  through a memory file, so any size, NUL bytes included, scores a verdict instead of raising.

When a guarantee cannot be given (no tool, namespaces refused), nothing runs: ``SandboxUnavailable`` says why.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from santacoder.evaluation.sandbox import backends, seccomp
from santacoder.evaluation.sandbox.backends import Backend, SandboxUnavailable
from santacoder.evaluation.sandbox.cgroups import ProgramCgroup, remove_leftovers

__all__ = ["Limits", "Outcome", "SandboxUnavailable", "describe", "probe", "run_sandboxed"]

PRELUDE = (Path(__file__).parent / "prelude.py").read_text()
# as root, each program runs as a uid of its own, drawn from 2**24 that no system allocates (systemd's "unused"
# range below its foreign-uid range), so that neither rlimits nor files are shared with anything else
PROGRAM_UIDS = range(0x70000000, 0x70000000 + 2**24)


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 2 * 2**30
    max_processes: int = 64
    disk_bytes: int = 64 * 2**20
    open_files: int = 256
    output_bytes: int = 8 * 2**10  # of stdout and of stderr, the last ones


@dataclass(frozen=True)
class Outcome:
    status: str  # "passed", "failed" or "timed out"
    returncode: int | None
    stdout: str
    stderr: str

    @property
    def reason(self) -> str:
        """Why it failed, in one line: the last line of stderr (an exception's), else how it exited."""
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1].strip() if lines else f"exited with status {self.returncode} before its test returned"


class _Tail:
    """The last ``size`` bytes of a stream."""

    def __init__(self, size: int):
        self.size, self.data = size, bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        del self.data[: max(0, len(self.data) - self.size)]

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def _memory_file(name: str, data: bytes) -> int:
    """An anonymous file holding ``data``, read from its start. Close-on-exec like every descriptor here, so that
    programs started at the same time from other threads do not inherit it; ``pass_fds`` gives it to its own."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def run_sandboxed(program: str | bytes, timeout: float, limits: Limits | None = None,
                  backend: str | None = None) -> Outcome:  # fmt: skip
    """Run the Python source ``program`` in the sandbox for at most ``timeout`` seconds (wall clock).

    ``status`` is "passed" only when the program ran to its end (the runner's token arrived)."""
    limits = limits or Limits()
    chosen = backends.find(backend)
    source = program if isinstance(program, bytes) else program.encode("utf-8")  # surrogates: the caller's error
    token = secrets.token_bytes(32)
    token_read, token_write = os.pipe()
    os.write(token_write, token)
    os.close(token_write)
    report_read, report_write = os.pipe()
    fds = [_memory_file("program.py", source), _memory_file("seccomp", seccomp.filter_bytes()), token_read,
           report_write]  # fmt: skip
    # one process more than the program's: the namespace's PID 1 counts in the same user namespace
    runner = backends.runner_argv(limits, timeout, token_read, report_write, limits.max_processes + 1)
    with ProgramCgroup(limits.memory_bytes, limits.max_processes + 2) as cgroup:
        try:
            settings = {
                "cgroups": cgroup.procs, "parent": os.getpid(), "reachable": backends.interpreter_prefixes(),
                "uid": secrets.choice(PROGRAM_UIDS) if os.geteuid() == 0 else None,
                "argv": backends.command(chosen, runner, limits.disk_bytes, fds[0], fds[1]),
            }  # fmt: skip
            process = subprocess.Popen(
                [backends.interpreter(), "-I", "-S", "-c", PRELUDE, json.dumps(settings)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=fds,
                env=backends.ENVIRONMENT, cwd="/", start_new_session=True,
            )  # fmt: skip
        except BaseException:
            os.close(report_read)
            raise
        finally:
            for fd in fds:  # the child holds its copies: the report pipe sees EOF once the program's side is gone
                os.close(fd)
        try:
            status, started, stdout, stderr = _watch(process, report_read, token, timeout, limits.output_bytes)
        finally:
            os.close(report_read)
            _kill(process)
            cgroup.kill()
    return _outcome(chosen, status, started, process.returncode, stdout, stderr)


def _watch(process, report_read: int, token: bytes, timeout: float, keep: int):
    """Stream the program's output and reports until its token arrives, everything closes, or the deadline."""
    deadline = time.monotonic() + timeout
    stdout, stderr, report = _Tail(keep), _Tail(keep), bytearray()
    started = False
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ, stdout)
        selector.register(process.stderr, selectors.EVENT_READ, stderr)
        selector.register(report_read, selectors.EVENT_READ, None)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timed out", started, stdout.text(), stderr.text()
            for key, _ in selector.select(remaining):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    selector.unregister(key.fileobj)
                elif key.data is not None:
                    key.data.add(chunk)
                else:
                    started = started or chunk[:1] == b"S"
                    report += chunk
                    if started and token in report:
                        _drain(selector)  # what the runner flushed before its report
                        return "passed", started, stdout.text(), stderr.text()
                    del report[: max(0, len(report) - len(token))]  # keep what a token split in two needs
    try:  # every descriptor closed: the program is over, or hides without any (a timeout, then)
        process.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return "timed out", started, stdout.text(), stderr.text()
    return "failed", started, stdout.text(), stderr.text()


def _drain(selector: selectors.BaseSelector, budget: int = 2**20) -> None:
    """Read what the output pipes already hold, up to ``budget`` bytes, without waiting for more."""
    while budget > 0 and (ready := [key for key, _ in selector.select(0) if key.data is not None]):
        for key in ready:
            chunk = os.read(key.fd, 1 << 16)
            if not chunk:
                selector.unregister(key.fileobj)
            else:
                key.data.add(chunk)
                budget -= len(chunk)


def _kill(process: subprocess.Popen) -> None:
    """SIGKILL to the namespace tool's group: its PID 1 inside dies with it, and with PID 1 every process of the
    namespace. No read after this: a process that holds a pipe cannot make the evaluator wait."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    process.stdout.close()
    process.stderr.close()


def _outcome(chosen: Backend, status: str, started: bool, returncode: int, stdout: str, stderr: str) -> Outcome:
    if not started and status != "timed out":
        lines = [line for line in stderr.splitlines() if line.strip()]
        reason = lines[-1].removeprefix("sandbox: ") if lines else f"it exited with status {returncode}"
        raise SandboxUnavailable(f"the {chosen.name} sandbox could not start a program: {reason}")
    return Outcome(status, returncode if status == "failed" else None, stdout, stderr)  # else: our kill


@functools.cache
def probe(backend: str | None = None) -> Backend:
    """Run an empty program once (and remove what a dead evaluator left): the backend in use, or raises
    SandboxUnavailable naming what this machine cannot enforce."""
    remove_leftovers()
    chosen = backends.find(backend)
    outcome = run_sandboxed("pass\n", timeout=30, backend=chosen.name)
    if outcome.status != "passed":
        raise SandboxUnavailable(f"a sandboxed empty program failed: {outcome.stderr.strip()[-500:]}")
    return chosen


def describe(backend: str | None = None) -> dict:
    """What the sandbox in use enforces on this machine, for the start of an eval and for ``eval.json``."""
    chosen = probe(backend)
    root = os.geteuid() == 0
    cgroup = ProgramCgroup.available() if root else False
    release = tuple(int(x) for x in os.uname().release.split(".")[:2] if x.isdigit())
    per_namespace = release >= (5, 14)
    return {
        "backend": f"{chosen.name} {chosen.version}",
        "user": "root, each program as a uid of its own" if root else f"uid {os.getuid()} (no root)",
        "kernel": os.uname().release,
        "filesystem": "read-only allow-list (system libraries and the interpreter), private size-limited /tmp",
        "network": "none (own network namespace)",
        "processes": ", ".join(
            (["cgroup pids.max per program"] if cgroup else [])
            + [
                "RLIMIT_NPROC per program (own user namespace)"
                if per_namespace or root
                else "RLIMIT_NPROC shared by this user's programs (kernel older than 5.14)"
            ]
        ),  # fmt: skip
        "memory": "cgroup per program and address space per process" if cgroup else "address space per process",
        "syscalls": "seccomp: no mount, unshare, setns, ptrace, bpf, io_uring, UNIX sockets",
        "capabilities": "none, no_new_privs",
        "environment": sorted(backends.ENVIRONMENT),
        "verdict": "passed only on the runner's token after the test returned",
    }
