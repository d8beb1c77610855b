"""Run untrusted generated code so that it cannot harm the machine (fail closed).

Each program runs under ``unshare`` (util-linux) in new PID, mount, network and IPC namespaces (plus a user
namespace when not root), as set up by ``_LAUNCHER`` before the program starts:

- its own process tree: the PID namespace dies with its first process, which the parent kills at the timeout,
  so no child outlives it (a double fork or ``setsid`` included);
- no network: a fresh network namespace has only a loopback device that is down (the host's loopback too is
  out of reach);
- no writes outside its directory: every mount is made read-only, then fresh size-limited tmpfs are mounted
  on ``/tmp``, ``/var/tmp`` and ``/dev/shm``; the program runs in ``/tmp/work``. The disk it can fill is that;
- the whole process tree's memory and process count capped by a cgroup, where this machine lets one be made
  (root, cgroup v1 or v2; ``santacoder.evaluation.cgroups``);
- limits: address space (memory), processes (``RLIMIT_NPROC`` of an unprivileged user: root, whom that rlimit
  does not bind, drops to ``nobody``), file size, CPU time, open files, no core files.

When a step cannot be taken (no ``unshare``, namespaces refused by the kernel), nothing runs: the reason is
raised as ``SandboxUnavailable``.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass

from santacoder.evaluation.cgroups import ProgramCgroup

SETUP_FAILED = 97  # the launcher's exit status when it could not enforce a guarantee (its reason on stderr)


class SandboxUnavailable(RuntimeError):
    """A guarantee of the sandbox cannot be enforced here: no code is run."""


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 2 * 2**30
    max_processes: int = 64  # beyond those the user already has
    disk_bytes: int = 64 * 2**20
    open_files: int = 256


@dataclass(frozen=True)
class Outcome:
    status: str  # "passed", "failed" or "timed out"
    returncode: int | None
    stdout: str
    stderr: str


_LAUNCHER = r"""
import ctypes, os, resource, sys
program, memory, nproc, disk, nofile, cpu, drop = sys.argv[1:8]
libc = ctypes.CDLL(None, use_errno=True)
def fail(step):
    err = ctypes.get_errno()
    sys.stderr.write(f"sandbox: {step} failed: {os.strerror(err) if err else 'unknown error'}\n")
    sys.exit(97)
for procs in sys.argv[8:]:  # the program's cgroups, made by the parent: join them before anything else
    try:
        with open(procs, "w") as f:
            f.write("0")
    except OSError as e:
        sys.stderr.write(f"sandbox: joining the cgroup {procs} failed: {e}\n")
        sys.exit(97)
MS_REC, MS_PRIVATE, MS_NOSUID, MS_NODEV = 0x4000, 1 << 18, 2, 4
if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
    fail("making mounts private")
MS_BIND = 4096
def visible_to_nobody(prefix):
    # the interpreter's prefix under a directory other users cannot search (pyenv in /root): put a fresh tmpfs
    # on that directory and bind the prefix back at its own path (its absolute paths keep working; the rest
    # of that directory, e.g. root's home, is hidden)
    parts = prefix.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        ancestor = "/" + "/".join(parts[:i])
        if os.stat(ancestor).st_mode & 0o001 == 0:
            break
    else:
        return
    stash = "/dev/shm/.interpreter"  # on the private tmpfs below, not the host's /dev/shm
    if libc.mount(b"tmpfs", b"/dev/shm", b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,mode=0700") != 0:
        fail("mounting a private tmpfs on /dev/shm")
    os.makedirs(stash)
    if libc.mount(prefix.encode(), stash.encode(), None, MS_BIND | MS_REC, None) != 0:
        fail("binding the interpreter aside")
    if libc.mount(b"tmpfs", ancestor.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,mode=0755") != 0:
        fail(f"covering {ancestor}")
    os.makedirs(prefix, mode=0o755)
    if libc.mount(stash.encode(), prefix.encode(), None, MS_BIND | MS_REC, None) != 0:
        fail("binding the interpreter back")
if drop == "1":
    visible_to_nobody(os.path.realpath(sys.base_prefix))
class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]
attr = MountAttr(0x1, 0, 0, 0)  # MOUNT_ATTR_RDONLY
SYS_mount_setattr, AT_FDCWD, AT_RECURSIVE = 442, -100, 0x8000
if libc.syscall(SYS_mount_setattr, AT_FDCWD, b"/", AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
    fail("making every mount read-only")
for target in (b"/tmp", b"/var/tmp", b"/dev/shm"):
    if os.path.isdir(target) and libc.mount(b"tmpfs", target, b"tmpfs", MS_NOSUID | MS_NODEV,
                                             f"size={disk},mode=1777".encode()) != 0:
        fail(f"mounting a private tmpfs on {target.decode()}")
os.makedirs("/tmp/work", mode=0o777)
os.chmod("/tmp/work", 0o777)
with open("/tmp/work/program.py", "w") as f:
    f.write(program)
if drop == "1":  # real root: RLIMIT_NPROC does not bind it, nobody is bound
    try:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    except OSError as e:
        sys.stderr.write(f"sandbox: dropping to user nobody failed: {e}\n")
        sys.exit(97)
for limit, value in ((resource.RLIMIT_AS, int(memory)), (resource.RLIMIT_NPROC, int(nproc)),
                     (resource.RLIMIT_FSIZE, int(disk)), (resource.RLIMIT_NOFILE, int(nofile)),
                     (resource.RLIMIT_CPU, int(cpu)), (resource.RLIMIT_CORE, 0)):
    try:
        resource.setrlimit(limit, (value, value))
    except (OSError, ValueError) as e:
        sys.stderr.write(f"sandbox: setting rlimit {limit} failed: {e}\n")
        sys.exit(97)
os.chdir("/tmp/work")
os.execv(sys.executable, [sys.executable, "-I", "-B", "program.py"])
"""


def _user_process_count() -> int:
    uid = os.getuid()
    count = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    count += 1
            except OSError:
                continue
    return count


def _command(program: str, timeout: float, limits: Limits, cgroup_procs: list[str]) -> list[str]:
    unshare = shutil.which("unshare")
    if unshare is None:
        raise SandboxUnavailable("the `unshare` command (util-linux) is not installed: no namespaces, no sandbox")
    root = os.geteuid() == 0
    flags = ["--pid", "--fork", "--kill-child", "--mount", "--mount-proc", "--net", "--ipc"]
    if not root:
        flags = ["--user", "--map-root-user", *flags]
    # nobody's processes (root drops to it) or this user's: the rlimit counts every process of that user
    nproc = limits.max_processes if root else _user_process_count() + limits.max_processes
    cpu = max(1, int(timeout) + 1)
    args = [program, limits.memory_bytes, nproc, limits.disk_bytes, limits.open_files, cpu, "1" if root else "0"]
    # the base interpreter, by its real path: a venv's python is a link that may live under /tmp, which the
    # sandbox covers with its own tmpfs
    python = os.path.realpath(sys.executable)
    return [unshare, *flags, python, "-I", "-c", _LAUNCHER, *map(str, args), *cgroup_procs]


def run_sandboxed(program: str, timeout: float, limits: Limits | None = None) -> Outcome:
    """Run the Python source ``program`` in the sandbox for at most ``timeout`` seconds (wall clock)."""
    limits = limits or Limits()
    with ProgramCgroup(limits.memory_bytes, limits.max_processes) as cgroup:
        process = subprocess.Popen(
            _command(program, timeout, limits, cgroup.procs),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: killed whole at the timeout
            text=True,
            errors="replace",
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # unshare dies; --kill-child takes the PID namespace with it
            stdout, stderr = process.communicate()
            return Outcome("timed out", None, stdout, stderr)
    if process.returncode == SETUP_FAILED and stderr.startswith("sandbox: "):
        raise SandboxUnavailable(stderr.strip().splitlines()[-1].removeprefix("sandbox: "))
    return Outcome("passed" if process.returncode == 0 else "failed", process.returncode, stdout, stderr)


@functools.cache
def probe() -> None:
    """Run an empty program once: raises SandboxUnavailable naming what this machine cannot enforce."""
    outcome = run_sandboxed("pass\n", timeout=30)
    if outcome.status != "passed":
        raise SandboxUnavailable(f"a sandboxed empty program failed: {outcome.stderr.strip()[-500:]}")
