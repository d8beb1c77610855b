"""Checkpoint files on disk: written so that no interruption leaves a partial one, read without running code.

- ``write_atomically``: the bytes go to a temporary file in the target's own directory, are flushed to disk
  (fsync), and only then renamed over the target; a crash, a kill or a full disk at any moment leaves either the
  old file or the new one under the name, never a partial one. Lightning's default instead serializes the whole
  checkpoint into memory and moves a staged copy, which across filesystems is a copy (a 1.1B model with Adam
  state is 13 GB). ``santacoder.training.checkpoint_io`` puts every ``.ckpt`` of a run through it.
- ``read_checkpoint``: a weights-only load (``santacoder.checkpoints.safe_load``) of a checkpoint of this project,
  its format checked (``santacoder.checkpoints.format``) and, for resuming, its checksum.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from santacoder.checkpoints.format import is_project_checkpoint, read_meta, verify
from santacoder.checkpoints.safe_load import safe_torch_load
from santacoder.durable import fsync_dir
from santacoder.errors import ConfigError, is_disk_full, out_of_space

log = logging.getLogger(__name__)

TMP_SUFFIX = ".partial"  # ".<name>.<pid>.partial": hidden, and never matched by *.ckpt


def open_for_write(path: Path) -> IO[bytes]:
    """The file a save streams into (tests replace it with one that fails part-way, like a full disk)."""
    return open(path, "wb")


RESUME_ADVICE = (
    "the checkpoints saved before it are kept; free space there (or move the run) and resume with ckpt_path=last"
)


def write_atomically(
    path: str | Path, write: Callable[[IO[bytes]], Any], *, what: str | None = None, advice: str = RESUME_ADVICE
) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it to ``path``. A full disk
    is one ``OutOfSpaceError`` naming ``what`` is written (default: the checkpoint) and ``advice``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    f = None
    try:
        with open_for_write(tmp) as raw:
            f = _KeepWriteError(raw)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        full = e if is_disk_full(e) else (f.error if f is not None and is_disk_full(f.error) else None)
        if full is not None:
            raise out_of_space(full, what or f"checkpoint {path.name}", path.parent, advice) from e
        raise
    fsync_dir(path.parent)
    return path


class _KeepWriteError:
    """The file, remembering the OSError of a failed write: torch.save reports it as a RuntimeError without its
    cause, and a full disk must still be told apart from other failures."""

    def __init__(self, file: IO[bytes]):
        self.file = file
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name: str):
        return getattr(self.file, name)


def remove_leftovers(directory: str | Path) -> list[Path]:
    """Delete temporary files of saves that a kill interrupted (run by rank 0 before training starts)."""
    directory = Path(directory)
    leftovers = sorted(directory.glob(f".*{TMP_SUFFIX}")) if directory.is_dir() else []
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
        log.info("removed %s, left by an interrupted save", leftover)
    return leftovers


def read_checkpoint(path: str | Path, *, check_contents: bool = False) -> dict:
    """Load a checkpoint of this project (weights-only: plain values and tensors, memory-mapped) and check its
    format; a ConfigError explains files that are not one, are truncated or are of a newer format.
    ``check_contents=True`` also verifies the checksum (reads every byte: for resuming, not for a quick look)."""
    path = Path(path)
    source = f"checkpoint {str(path)!r}"
    obj = safe_torch_load(path)
    if not is_project_checkpoint(obj):
        hint = ""
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            hint = (
                " It is a bare state dict, which has no model config: put it in a directory next to its "
                "Hugging Face config.json (as pytorch_model.bin)."
            )
        raise ConfigError(
            f"{source} is not a Lightning checkpoint of this project (no state_dict/hyper_parameters).{hint}"
        )
    read_meta(obj, source)
    if check_contents:
        verify(obj, source)
    return obj
