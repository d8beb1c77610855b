"""What another user can read: shared data (token stores, prepared shards, cached tokenizers) is written for the
users its umask allows, whether the writer is root or not."""

import os
from pathlib import Path

NOBODY = 65534


def unreadable_by_another_user(root: Path) -> list[str]:
    """Every file under ``root`` that an unprivileged uid cannot open. As root: tried for real, by a forked child
    that drops to ``nobody``; as an ordinary user (who cannot switch uid): judged by the "other" permission bits
    of each file and of the directories on its way."""
    paths = sorted(p for p in root.rglob("*") if p.is_file())
    if os.geteuid() != 0:
        return [str(p) for p in paths if not _others_may_read(p, root)]
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nobody, then try each file
        os.close(read_fd)
        failed = []
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            for p in paths:
                try:
                    with open(p, "rb") as f:
                        f.read(1)
                except OSError:
                    failed.append(str(p))
        finally:
            os.write(write_fd, "\n".join(failed).encode())
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return [line for line in out.splitlines() if line]


def _others_may_read(path: Path, root: Path) -> bool:
    if not path.stat().st_mode & 0o004:
        return False
    directories = [root / d for d in path.relative_to(root).parents]  # root itself included (".")
    return all(d.stat().st_mode & 0o001 for d in directories)
