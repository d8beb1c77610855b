"""What another user can read and do: shared data (token stores, prepared shards, cached tokenizers) is written for
the users its umask allows, whether the writer is root or not; and code run as an ordinary user, from a suite that
runs as root."""

import json
import os
import subprocess
import sys
from pathlib import Path

from santacoder.evaluation.sandbox import PRELUDE
from santacoder.evaluation.sandbox.backends import interpreter, interpreter_prefixes

NOBODY = 65534
REPO = Path(__file__).resolve().parents[1]


def as_ordinary_user(argv: list[str], home: Path, timeout: float, uid: int = NOBODY) -> subprocess.CompletedProcess:
    """Run ``argv`` as ``uid`` (root only), through the sandbox's own prelude: a private mount namespace where
    the interpreter, the venv and the checkout are reachable (pyenv under /root, a clone under a 0700 mktemp
    directory), then the uid dropped for good."""
    settings = {"cgroups": [], "parent": os.getpid(), "uid": uid, "argv": argv,
                "reachable": [*interpreter_prefixes(), os.path.realpath(sys.prefix), str(REPO)]}  # fmt: skip
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "HF_TOKEN": "hf_s3cr3t",
           "WANDB_API_KEY": "s3cr3t", "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
    return subprocess.run(
        [interpreter(), "-I", "-S", "-c", PRELUDE, json.dumps(settings)],
        capture_output=True, text=True, env=env, cwd="/", timeout=timeout,
    )  # fmt: skip


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
