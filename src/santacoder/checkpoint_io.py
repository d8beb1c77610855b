"""Writing and finding checkpoints so that no interruption loses or corrupts one.

- ``write_atomically``: the bytes go to a temporary file in the target's own directory, are flushed to disk
  (fsync), and only then renamed over the target; a crash, a kill or a full disk at any moment leaves either the
  old file or the new one under the name, never a partial one. Lightning's default instead serializes the whole
  checkpoint into memory and moves a staged copy, which across filesystems is a copy (a 1.1B model with Adam
  state is 13 GB).
- ``AtomicCheckpointIO``: Lightning's CheckpointIO plugin on top of it: every ``.ckpt`` a run writes is streamed
  by ``torch.save`` straight into that temporary file, with a checksum of its contents recorded inside; loading
  is weights-only whatever the environment says (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` included).
- ``newest_good_checkpoint`` / ``resolve_resume``: what ``ckpt_path`` means (a file, a run directory, or
  ``last``: this run's own directory), verified before anything else runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO

from santacoder.checkpoint import META_KEY, read_checkpoint, seal, stamp, stored_tokenizer
from santacoder.errors import ConfigError, is_disk_full, out_of_space

log = logging.getLogger(__name__)

TMP_SUFFIX = ".partial"  # ".<name>.<pid>.partial": hidden, and never matched by *.ckpt


def open_for_write(path: Path) -> IO[bytes]:
    """The file a save streams into (tests replace it with one that fails part-way, like a full disk)."""
    return open(path, "wb")


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX: the directory entry is data of the directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not supported here (e.g. some network filesystems): the rename itself is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it to ``path``."""
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
            raise out_of_space(
                full,
                f"checkpoint {path.name}",
                path.parent,
                "the checkpoints saved before it are kept; free space "
                "there (or move the run) and resume with ckpt_path=last",
            ) from e
        raise
    _fsync_dir(path.parent)
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


class AtomicCheckpointIO(CheckpointIO):
    """Lightning's checkpoint plugin for this project: atomic streamed saves with a checksum, safe loads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        if META_KEY not in checkpoint:  # written by Lightning without the module's hook (e.g. by a callback)
            stamp(checkpoint)
        seal(checkpoint)
        write_atomically(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        # weights-only and the same refusal of foreign globals as model.init_from, whatever the caller asked;
        # the checksum was verified when ckpt_path was resolved (resolve_resume), before any other work
        return read_checkpoint(path)

    def remove_checkpoint(self, path) -> None:
        Path(path).unlink(missing_ok=True)


def is_resumable(checkpoint: dict) -> bool:
    """A training state (optimizer, schedule, step), not the weights alone that ``convert`` writes."""
    return "optimizer_states" in checkpoint and "loops" in checkpoint


def _is_good(path: Path) -> bool:
    try:
        checkpoint = read_checkpoint(path, check_contents=True)
    except ConfigError as e:
        log.warning("skipping %s: %s", path, e)
        return False
    return is_resumable(checkpoint)


def checkpoints_in(directory: Path) -> list[Path]:
    """The ``.ckpt`` files of a directory, newest first (by modification time, ``last.ckpt`` first on a tie)."""
    files = [p for p in directory.glob("*.ckpt") if p.is_file()]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name == "last.ckpt"), reverse=True)


def newest_good_checkpoint(directory: str | Path, exclude: Path | None = None) -> Path | None:
    """The newest checkpoint of ``directory`` that reads, matches its checksum and can be resumed, or None."""
    for path in checkpoints_in(Path(directory)):
        if path != exclude and _is_good(path):
            return path
    return None


def checkpoint_dir(run_or_dir: Path) -> Path:
    """A run directory's ``checkpoints/``, or the directory itself when it holds checkpoints directly."""
    return run_or_dir / "checkpoints" if (run_or_dir / "checkpoints").is_dir() else run_or_dir


def resolve_resume(ckpt_path: str | None, output_dir: str | Path) -> Path | None:
    """The verified checkpoint file that ``ckpt_path`` names, or None to start from scratch.

    ``last``: the newest good checkpoint of this run's own directory (none yet: a new run, e.g. a SLURM job's
    first start); a run directory or a checkpoint directory: its newest good checkpoint; a file: that file.
    A damaged or unreadable file is refused with one line naming the newest good one beside it.
    """
    if not ckpt_path:
        return None
    if str(ckpt_path) == "last":
        found = newest_good_checkpoint(checkpoint_dir(Path(output_dir)))
        if found is None:
            log.info("ckpt_path=last: no checkpoint in %s yet, starting a new run", output_dir)
        else:
            log.info("ckpt_path=last: resuming from %s", found)
        return found
    path = Path(ckpt_path)
    if path.is_dir():
        found = newest_good_checkpoint(checkpoint_dir(path))
        if found is None:
            raise ConfigError(f"ckpt_path={str(ckpt_path)!r} holds no readable checkpoint (*.ckpt)")
        log.info("resuming from %s, the newest good checkpoint of %s", found, path)
        return found
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={str(ckpt_path)!r} is not a file or directory; give a checkpoint or run directory of an "
            "earlier run, or ckpt_path=last"
        )
    try:
        read_checkpoint(path, check_contents=True)
    except ConfigError as e:
        good = newest_good_checkpoint(path.parent, exclude=path)
        hint = (
            f"resume from ckpt_path={str(good)!r}, the newest good checkpoint beside it"
            if good
            else ("no other checkpoint beside it is readable")
        )
        raise ConfigError(f"refusing to resume: {e}; {hint}") from None
    return path


def refuse_unresumable(path: Path, model_config: dict) -> None:
    """A checkpoint that cannot continue this run stops it in one line before any work: weights without the
    optimizer, schedule and step (``convert``, ``save_checkpoint``), or a model of another shape."""
    from santacoder.model import SHAPE_FIELDS

    checkpoint = read_checkpoint(path)
    if not is_resumable(checkpoint):
        raise ConfigError(
            f"ckpt_path={str(path)!r} holds weights only (no optimizer, schedule or step to resume from); start a "
            f"new run from these weights with model.init_from={str(path)!r} instead"
        )
    saved = checkpoint["hyper_parameters"].get("config", {})
    differ = [f for f in SHAPE_FIELDS if f in saved and saved[f] != model_config.get(f)]
    if differ:
        theirs = " ".join(f"model.config.{f}={saved[f]}" for f in differ)
        ours = ", ".join(f"{f}={model_config.get(f)}" for f in differ)
        raise ConfigError(
            f"ckpt_path={str(path)!r} holds a model of another shape than this run's ({ours}); resume with the "
            f"model settings of the run that wrote it ({theirs}), or start a new run from its weights with "
            "model.init_from"
        )


def model_file(path: str | Path) -> Path:
    """The checkpoint file a run directory or checkpoint directory stands for: its ``last.ckpt``, else its
    newest readable ``.ckpt``; any other path as it is."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return path
    directory = checkpoint_dir(path)
    if (directory / "last.ckpt").is_file():
        return directory / "last.ckpt"
    for candidate in checkpoints_in(directory):
        try:
            read_checkpoint(candidate)
        except ConfigError:
            continue
        return candidate
    raise ConfigError(f"{str(path)!r} holds no readable checkpoint (*.ckpt) and no config.json or tokenizer.json")


def tokenizer_of_checkpoint(path: str | Path):
    """The tokenizer carried by the checkpoint at ``path`` (a ``.ckpt``, a run or checkpoint directory)."""
    file = model_file(path)
    tokenizer = stored_tokenizer(read_checkpoint(file), f"checkpoint {str(file)!r}")
    if tokenizer is None:
        raise ConfigError(
            f"checkpoint {str(file)!r} carries no tokenizer (written before checkpoints did, or converted without "
            "one); pass the tokenizer.json it was trained with"
        )
    return tokenizer
