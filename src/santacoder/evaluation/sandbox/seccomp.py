"""The seccomp filter of every sandboxed program: the system calls that could undo or escape the sandbox fail.

Both backends load the same classic-BPF program (bubblewrap through ``--seccomp FD``, the unshare launcher
through ``prctl``), built here with no library: the filter is small enough to read. It refuses, with ``EPERM``:
changing mounts (``mount``, ``umount2``, ``mount_setattr``, the new mount API, ``pivot_root``, ``chroot``),
entering or making namespaces (``unshare``, ``setns``, ``clone`` with a namespace flag; ``clone3``, whose flags
a filter cannot read, gets ``ENOSYS`` so that libc falls back to ``clone``), reading or writing other processes
(``ptrace``, ``process_vm_*``, ``pidfd_getfd``, ``kcmp``), the kernel's larger attack surfaces (``bpf``,
``io_uring``, ``userfaultfd``, ``perf_event_open``, keyrings, modules, kexec), sockets of any family but
IPv4/IPv6 (UNIX sockets of the host reached through a bind; there is no network in the namespace either), and
``ioctl(TIOCSTI)`` (typing into a terminal). A system call of another ABI (x32, i386 on x86-64) kills the
process: the numbers below are this architecture's only.
"""

from __future__ import annotations

import functools
import platform
import struct

from santacoder.evaluation.sandbox.backends import SandboxUnavailable

# classic BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h)
LOAD_WORD = 0x20  # BPF_LD | BPF_W | BPF_ABS
JUMP_EQUAL, JUMP_GREATER_EQUAL, JUMP_ANY_BIT = 0x15, 0x35, 0x45  # BPF_JMP | BPF_JEQ / BPF_JGE / BPF_JSET, BPF_K
RETURN = 0x06  # BPF_RET | BPF_K
KILL_PROCESS, ALLOW = 0x80000000, 0x7FFF0000
EPERM, ENOSYS = 1, 38


def errno(number: int) -> int:
    return 0x00050000 | number  # SECCOMP_RET_ERRNO


# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6] (the low word of args[i] first)
NR, ARCH = 0, 4


def arg(index: int) -> int:
    return 16 + 8 * index


REFUSED = (
    "mount umount2 mount_setattr open_tree move_mount fsopen fsconfig fsmount fspick pivot_root chroot "
    "unshare setns ptrace process_vm_readv process_vm_writev pidfd_getfd kcmp process_madvise "
    "bpf io_uring_setup io_uring_enter io_uring_register userfaultfd perf_event_open fanotify_init "
    "keyctl add_key request_key init_module finit_module delete_module kexec_load kexec_file_load "
    "reboot swapon swapoff acct quotactl quotactl_fd open_by_handle_at name_to_handle_at lookup_dcookie "
    "syslog vhangup"
).split()

# (audit arch, first number of another ABI on the same entry point or None, syscall numbers): x86-64 from
# asm/unistd_64.h, arm64 from asm-generic/unistd.h
ARCHITECTURES = {
    "x86_64": (0xC000003E, 0x40000000, {
        "ioctl": 16, "socket": 41, "clone": 56, "ptrace": 101, "syslog": 103, "vhangup": 153, "pivot_root": 155,
        "chroot": 161, "acct": 163, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169,
        "init_module": 175, "delete_module": 176, "quotactl": 179, "lookup_dcookie": 212, "kexec_load": 246,
        "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272, "perf_event_open": 298,
        "fanotify_init": 300, "name_to_handle_at": 303, "open_by_handle_at": 304, "setns": 308,
        "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312, "finit_module": 313,
        "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
        "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
        "fsmount": 432, "fspick": 433, "clone3": 435, "pidfd_getfd": 438, "process_madvise": 440,
        "mount_setattr": 442, "quotactl_fd": 443,
    }),
    "aarch64": (0xC00000B7, None, {
        "lookup_dcookie": 18, "ioctl": 29, "umount2": 39, "mount": 40, "pivot_root": 41, "chroot": 51,
        "vhangup": 58, "quotactl": 60, "acct": 89, "unshare": 97, "kexec_load": 104, "init_module": 105,
        "delete_module": 106, "syslog": 116, "ptrace": 117, "reboot": 142, "socket": 198, "add_key": 217,
        "request_key": 218, "keyctl": 219, "clone": 220, "swapon": 224, "swapoff": 225, "perf_event_open": 241,
        "fanotify_init": 262, "name_to_handle_at": 264, "open_by_handle_at": 265, "setns": 268,
        "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272, "finit_module": 273, "bpf": 280,
        "userfaultfd": 282, "kexec_file_load": 294, "io_uring_setup": 425, "io_uring_enter": 426,
        "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
        "fsmount": 432, "fspick": 433, "clone3": 435, "pidfd_getfd": 438, "process_madvise": 440,
        "mount_setattr": 442, "quotactl_fd": 443,
    }),
}  # fmt: skip

NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x80
AF_INET, AF_INET6 = 2, 10
TIOCSTI, TIOCLINUX = 0x5412, 0x541C


def instructions(machine: str | None = None) -> list[tuple[int, int, int, int]]:
    """The filter as (code, jump if true, jump if false, constant) tuples; jumps count instructions skipped."""
    machine = machine or platform.machine()
    if machine not in ARCHITECTURES:
        raise SandboxUnavailable(f"no seccomp filter for the {machine} architecture (only {sorted(ARCHITECTURES)})")
    audit_arch, other_abi, numbers = ARCHITECTURES[machine]
    program = [(LOAD_WORD, 0, 0, ARCH), (JUMP_EQUAL, 1, 0, audit_arch), (RETURN, 0, 0, KILL_PROCESS)]
    program.append((LOAD_WORD, 0, 0, NR))
    if other_abi is not None:
        program += [(JUMP_GREATER_EQUAL, 0, 1, other_abi), (RETURN, 0, 0, KILL_PROCESS)]
    for name in REFUSED:
        program += [(JUMP_EQUAL, 0, 1, numbers[name]), (RETURN, 0, 0, errno(EPERM))]
    program += [(JUMP_EQUAL, 0, 1, numbers["clone3"]), (RETURN, 0, 0, errno(ENOSYS))]
    # each block below loads what it tests and ends in a return, so the next one starts from the number again
    program += [
        (JUMP_EQUAL, 0, 4, numbers["clone"]), (LOAD_WORD, 0, 0, arg(0)),
        (JUMP_ANY_BIT, 0, 1, NAMESPACE_FLAGS), (RETURN, 0, 0, errno(EPERM)), (RETURN, 0, 0, ALLOW),
        (JUMP_EQUAL, 0, 5, numbers["socket"]), (LOAD_WORD, 0, 0, arg(0)),
        (JUMP_EQUAL, 2, 0, AF_INET), (JUMP_EQUAL, 1, 0, AF_INET6), (RETURN, 0, 0, errno(EPERM)), (RETURN, 0, 0, ALLOW),
        (JUMP_EQUAL, 0, 5, numbers["ioctl"]), (LOAD_WORD, 0, 0, arg(1)),
        (JUMP_EQUAL, 2, 0, TIOCSTI), (JUMP_EQUAL, 1, 0, TIOCLINUX), (RETURN, 0, 0, ALLOW), (RETURN, 0, 0, errno(EPERM)),
        (RETURN, 0, 0, ALLOW),
    ]  # fmt: skip
    return program


@functools.cache  # built once per process, not once per program
def filter_bytes(machine: str | None = None) -> bytes:
    """The filter as the kernel reads it: an array of ``struct sock_filter`` (what ``bwrap --seccomp`` takes)."""
    return b"".join(struct.pack("=HBBI", *instruction) for instruction in instructions(machine))
