"""Which checkpoint file a path or ``ckpt_path`` stands for: the ``.ckpt`` files of a run directory newest first,
the newest one that reads and matches its checksum, and the refusals of files that cannot continue a run."""

from __future__ import annotations

import logging
from pathlib import Path

from santacoder.checkpoints.storage import read_checkpoint
from santacoder.config import SHAPE_FIELDS
from santacoder.errors import ConfigError

log = logging.getLogger(__name__)


def is_resumable(checkpoint: dict) -> bool:
    """A training state (optimizer, schedule, step), not the weights alone that ``convert`` writes."""
    return "optimizer_states" in checkpoint and "loops" in checkpoint


def _good_step(path: Path, verify: bool = True) -> int | None:
    """The step of a checkpoint that reads, matches its checksum (``verify``: reads every byte) and can be
    resumed; None for any other file."""
    try:
        checkpoint = read_checkpoint(path, check_contents=verify)
    except ConfigError as e:
        log.warning("skipping %s: %s", path, e)
        return None
    return int(checkpoint.get("global_step", -1)) if is_resumable(checkpoint) else None


def checkpoints_in(directory: Path) -> list[Path]:
    """The ``.ckpt`` files of a directory, newest first (by modification time, ``last.ckpt`` first on a tie)."""
    files = [p for p in directory.glob("*.ckpt") if p.is_file()]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name == "last.ckpt"), reverse=True)


def newest_good_checkpoint(directory: str | Path, exclude: Path | None = None, verify: bool = True) -> Path | None:
    """The newest checkpoint of ``directory`` that reads, matches its checksum (unless not ``verify``) and can be
    resumed, or None. ``last.ckpt`` wins over a file of the same step written after it (``best_step_<n>.ckpt`` at
    the end of a run): the same state, under the name a user expects a run to resume from."""
    for path in checkpoints_in(Path(directory)):
        step = None if path == exclude else _good_step(path, verify)
        if step is None:
            continue
        last = path.parent / "last.ckpt"
        if path != last and last != exclude and last.is_file():
            last_step = _good_step(last, verify)  # at least as far: the same state, under the name users expect
            if last_step is not None and last_step >= step:
                return last
        return path
    return None


def checkpoint_dir(run_or_dir: Path) -> Path:
    """A run directory's ``checkpoints/``, or the directory itself when it holds checkpoints directly."""
    return run_or_dir / "checkpoints" if (run_or_dir / "checkpoints").is_dir() else run_or_dir


def resolve_resume(ckpt_path: str | None, output_dir: str | Path, *, verify: bool = True) -> Path | None:
    """The verified checkpoint file that ``ckpt_path`` names, or None to start from scratch.

    ``last``: the newest good checkpoint of this run's own directory (none yet: a new run, e.g. a SLURM job's
    first start); a run directory or a checkpoint directory: its newest good checkpoint; a file: that file.
    A damaged or unreadable file is refused with one line naming the newest good one beside it.
    ``verify=False`` skips the checksums (every byte of each candidate): a quick look, not a decision.
    """
    if not ckpt_path:
        return None
    say = log.info if verify else log.debug
    if str(ckpt_path) == "last":
        found = newest_good_checkpoint(checkpoint_dir(Path(output_dir)), verify=verify)
        if found is None:
            say("ckpt_path=last: no checkpoint in %s yet, starting a new run", output_dir)
        else:
            say("ckpt_path=last: resuming from %s", found)
        return found
    path = Path(ckpt_path)
    if path.is_dir():
        found = newest_good_checkpoint(checkpoint_dir(path), verify=verify)
        if found is None:
            raise ConfigError(f"ckpt_path={str(ckpt_path)!r} holds no readable checkpoint (*.ckpt)")
        say("resuming from %s, the newest good checkpoint of %s", found, path)
        return found
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={str(ckpt_path)!r} is not a file or directory; give a checkpoint or run directory of an "
            "earlier run, or ckpt_path=last"
        )
    try:
        read_checkpoint(path, check_contents=verify)
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
