"""The fallback backend's setup inside the namespaces, where bubblewrap is not installed: what bwrap would do.

Run by ``unshare --user --map-root-user --pid --fork --kill-child --mount --net --ipc --uts --cgroup`` as
``python -I -S -c <this file> <settings as JSON>``; it is PID 1 of the new PID namespace and root of a user
namespace owned by the evaluator's (unprivileged) uid. Trusted code, standard library only. In order:

1. a new root on a tmpfs holding only an allow-list, each bound read-only (remounted one mount at a time, so no
   ``mount_setattr``, which needs Linux 5.12): the interpreter and its libraries, nothing of any home; a fresh
   ``/proc`` (this namespace's processes only), a few device nodes, a size-limited ``/tmp`` with the program in
   ``/tmp/work``; ``pivot_root`` into it and detach the old root;
2. fork: this process stays PID 1 and only waits (the namespace, every process in it, dies with it, and it dies
   with ``unshare``, which dies with the evaluator); the child drops every capability, including the bounding
   set (so no ``execve`` as uid 0 gets any back), sets ``no_new_privs``, loads the seccomp filter (which refuses
   mount, umount, unshare, setns, ptrace and the like) and execs the runner. Nothing it runs can remount,
   unmount or leave what step 1 built.

Exit status 97 with ``sandbox: <reason>`` on stderr: a step failed, nothing of the program ran.
"""

import ctypes
import json
import os
import sys

SETUP_FAILED = 97
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 8, 32, 4096, 0x4000, 1 << 18)  # fmt: skip
ST_NOSUID, ST_NODEV, ST_NOEXEC = 2, 4, 8
MNT_DETACH = 2
PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, PR_SET_SECCOMP = 38, 24, 47, 4, 22
SECCOMP_MODE_FILTER = 2
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
DEVICES = ("null", "zero", "full", "random", "urandom")

libc = ctypes.CDLL(None, use_errno=True)


def fail(message: str) -> None:
    sys.stderr.write(f"sandbox: {message}\n")
    sys.stderr.flush()
    os._exit(SETUP_FAILED)


def call(name: str, *args, step: str) -> None:
    if getattr(libc, name)(*args) != 0:
        fail(f"{step} failed: {os.strerror(ctypes.get_errno())}")


def mount_points_under(path: str) -> list[str]:
    """``path`` and every mount point below it, from /proc/self/mountinfo (octal escapes decoded)."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == path or point.startswith(path.rstrip("/") + "/"):
                found.append(point)
    return found


def bind_read_only(source: str, target: str) -> None:
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    call("mount", source.encode(), target.encode(), None, MS_BIND | MS_REC, None, step=f"binding {source}")
    for point in mount_points_under(target):
        # the flags the kernel locked on a mount from the host's namespace must be passed again
        flags = os.statvfs(point).f_flag
        kept = (MS_NOSUID if flags & ST_NOSUID else 0) | (MS_NODEV if flags & ST_NODEV else 0)
        kept |= MS_NOEXEC if flags & ST_NOEXEC else 0
        call("mount", None, point.encode(), None, MS_REMOUNT | MS_BIND | MS_RDONLY | kept, None,
             step=f"making {point} read-only")  # fmt: skip


def build_root(settings: dict) -> None:
    call("mount", None, b"/", None, MS_REC | MS_PRIVATE, None, step="making mounts private")
    # a fresh tmpfs on a directory no bind comes from is the new root (what it covers is hidden here only)
    sources = [source for kind, source, _ in settings["binds"] if kind != "symlink"]
    candidates = [d for d in ("/tmp", "/mnt", "/media", "/srv", "/dev/shm") if os.path.isdir(d)]
    root = next((d for d in candidates if not any(s == d or s.startswith(d + "/") for s in sources)), None)
    if root is None:
        fail(f"no directory for the new root: each of {candidates} holds something the sandbox binds")
    call("mount", b"tmpfs", root.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,mode=0755", step="a new root")
    for kind, source, target in settings["binds"]:
        if kind == "symlink":
            os.symlink(source, root + target)
        else:
            bind_read_only(source, root + target)
    os.makedirs(f"{root}/proc")
    call("mount", b"proc", f"{root}/proc".encode(), b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None, step="/proc")
    os.makedirs(f"{root}/dev")
    call("mount", b"tmpfs", f"{root}/dev".encode(), b"tmpfs", MS_NOSUID, b"size=64k,mode=0755", step="/dev")
    for device in DEVICES:
        open(f"{root}/dev/{device}", "a").close()
        call("mount", f"/dev/{device}".encode(), f"{root}/dev/{device}".encode(), None, MS_BIND, None,
             step=f"/dev/{device}")  # fmt: skip
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):  # fmt: skip
        os.symlink(target, f"{root}/dev/{name}")
    call("mount", None, f"{root}/dev".encode(), None, MS_REMOUNT | MS_RDONLY | MS_NOSUID, None, step="/dev read-only")
    os.makedirs(f"{root}/tmp")
    call("mount", b"tmpfs", f"{root}/tmp".encode(), b"tmpfs", MS_NOSUID | MS_NODEV,
         f"size={settings['disk']},mode=1777".encode(), step="a size-limited /tmp")  # fmt: skip
    os.makedirs(f"{root}/tmp/work", mode=0o777)
    with open(f"{root}/tmp/work/program.py", "wb") as program:
        source = settings["source_fd"]
        os.lseek(source, 0, os.SEEK_SET)
        while chunk := os.read(source, 1 << 20):
            program.write(chunk)
    os.close(source)
    call("mount", None, root.encode(), None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None,
         step="the new root read-only")  # fmt: skip
    os.chdir(root)
    machine = os.uname().machine
    if machine not in PIVOT_ROOT:
        fail(f"no pivot_root number known for {machine}")
    call("syscall", PIVOT_ROOT[machine], b".", b".", step="pivot_root")
    call("umount2", b".", MNT_DETACH, step="detaching the old root")
    os.chdir("/tmp/work")


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def confine(seccomp_filter: bytes, last_capability: int) -> None:
    """Lose every capability for good, then refuse the system calls of ``seccomp``'s list."""
    call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, step="no_new_privs")
    for capability in range(last_capability + 1):
        call("prctl", PR_CAPBSET_DROP, capability, 0, 0, 0, step=f"dropping capability {capability}")
    call("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, step="clearing ambient capabilities")
    header, data = CapHeader(0x20080522, 0), (CapData * 2)()  # _LINUX_CAPABILITY_VERSION_3, all zero
    call("capset", ctypes.byref(header), data, step="dropping capabilities")
    program = SockFprog(len(seccomp_filter) // 8, seccomp_filter)
    call("prctl", PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0, step="loading the seccomp filter")


def main() -> None:
    settings = json.loads(sys.argv[1])
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last_capability = int(f.read())
    build_root(settings)
    child = os.fork()
    if child == 0:
        confine(bytes.fromhex(settings["seccomp"]), last_capability)
        try:
            os.execve(settings["argv"][0], settings["argv"], settings["env"])
        except OSError as e:
            fail(f"starting the runner failed: {e}")
    while True:  # PID 1: reap until the runner exits, then take the namespace down with us
        pid, status = os.wait()
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            os._exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
