"""The host side of one sandboxed run, between the evaluator and the namespace tool (bubblewrap or unshare).

Trusted code, run as ``python -I -S -c <this file> <settings as JSON>`` so that it needs nothing but the standard
library and no file of the package (which the program's own uid may not be able to read). In order:

1. join the program's cgroups (root only), so that every process it makes is counted there;
2. as root: leave root for the program's own unprivileged uid, in a private mount namespace where the
   interpreter is reachable by that uid (pyenv under ``/root``, which other users cannot search): real root is
   exempt from the process limit and would hold every capability the tools do not drop;
3. ask the kernel for SIGKILL when the evaluator dies (after the uid change, which clears that request), and
   exit if it already has;
4. exec the namespace tool, which keeps that request (it is not set-uid).

Exit status 97 with ``sandbox: <reason>`` on stderr: a step failed, nothing of the program ran.
"""

import ctypes
import json
import os
import signal
import sys

SETUP_FAILED = 97
CLONE_NEWNS, MS_REC, MS_PRIVATE, MS_BIND, MS_NOSUID, MS_NODEV = 0x20000, 0x4000, 1 << 18, 4096, 2, 4
PR_SET_PDEATHSIG = 1


def fail(message: str) -> None:
    sys.stderr.write(f"sandbox: {message}\n")
    sys.stderr.flush()
    os._exit(SETUP_FAILED)


def call(libc, name: str, *args, step: str) -> None:
    if getattr(libc, name)(*args) != 0:
        fail(f"{step} failed: {os.strerror(ctypes.get_errno())}")


def blocked_ancestor(path: str) -> str | None:
    """The first directory above ``path`` that other users cannot search (None: the path is reachable)."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts)):
        ancestor = "/" + "/".join(parts[:i])
        if os.stat(ancestor).st_mode & 0o001 == 0:
            return ancestor
    return None


def make_reachable(libc, paths: list[str]) -> None:
    """Cover each unsearchable ancestor with an empty tmpfs and bind the paths below it back at their own places
    (their absolute paths keep working; the rest of that directory, e.g. root's home, is hidden)."""
    by_ancestor: dict[str, list[str]] = {}
    paths = [p for p in paths if not any(p.startswith(other.rstrip("/") + "/") for other in paths)]  # outermost
    for path in paths:
        ancestor = blocked_ancestor(path)
        if ancestor is not None:
            by_ancestor.setdefault(ancestor, []).append(path)
    if not by_ancestor:
        return
    stash = "/dev/shm/.sandbox"  # a private tmpfs of this mount namespace, not the host's /dev/shm
    call(libc, "mount", b"tmpfs", b"/dev/shm", b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,mode=0700",
         step="mounting a private tmpfs on /dev/shm")  # fmt: skip
    for a, (ancestor, below) in enumerate(sorted(by_ancestor.items())):
        for p, path in enumerate(below):
            aside = f"{stash}/{a}-{p}"
            os.makedirs(aside)
            call(libc, "mount", path.encode(), aside.encode(), None, MS_BIND | MS_REC, None, step=f"binding {path}")
        call(libc, "mount", b"tmpfs", ancestor.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,mode=0755",
             step=f"covering {ancestor}")  # fmt: skip
        for p, path in enumerate(below):
            os.makedirs(path, mode=0o755, exist_ok=True)
            call(libc, "mount", f"{stash}/{a}-{p}".encode(), path.encode(), None, MS_BIND | MS_REC, None,
                 step=f"binding {path} back")  # fmt: skip


def main() -> None:
    settings = json.loads(sys.argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    for procs in settings["cgroups"]:
        try:
            with open(procs, "w") as f:
                f.write("0")
        except OSError as e:
            fail(f"joining the cgroup {procs} failed: {e}")
    if settings["uid"] is not None:
        call(libc, "unshare", CLONE_NEWNS, step="a private mount namespace")
        call(libc, "mount", None, b"/", None, MS_REC | MS_PRIVATE, None, step="making mounts private")
        make_reachable(libc, settings["reachable"])
        try:
            os.setgroups([])
            os.setresgid(settings["uid"], settings["uid"], settings["uid"])
            os.setresuid(settings["uid"], settings["uid"], settings["uid"])
        except OSError as e:
            fail(f"dropping to uid {settings['uid']} failed: {e}")
    call(libc, "prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0, step="asking for SIGKILL at the evaluator's death")
    if os.getppid() != settings["parent"]:
        fail("the evaluator died before the program started")
    try:
        os.execv(settings["argv"][0], settings["argv"])
    except OSError as e:
        fail(f"starting {settings['argv'][0]} failed: {e}")


if __name__ == "__main__":
    main()
