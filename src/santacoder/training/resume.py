"""Which checkpoint a run resumes from, decided once per job.

Before any work, each process takes a quick look (``resolve_resume(..., verify=False)`` in
``santacoder.training.task``): the newest checkpoint its own listing shows, read for its metadata only
(memory-mapped), so that a missing path, a file of another model shape or a weights-only file stops the run in
one line, and the W&B run to continue is known before the loggers start.

The decision itself is made inside ``trainer.fit``, once the process group is up and before anything is restored
(``AgreeOnResume``, a callback whose ``setup`` Lightning calls at that point): global rank 0 finds the newest
good checkpoint, verifies its checksum (the one full read of the file for the whole job) and broadcasts the path,
or its one-line refusal; every rank then loads that file. Ranks whose directory listings disagree (a stale
network-filesystem cache) therefore still resume from one state: optimizer moments, schedule, loop counters
and data position included, not only the weights DDP would re-broadcast. A one-process run goes the same way,
its broadcast a no-op.
"""

from __future__ import annotations

import os
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from santacoder.checkpoints.discovery import refuse_unresumable, resolve_resume
from santacoder.errors import ConfigError


class AgreedCheckpoint(os.PathLike):
    """``trainer.fit``'s ``ckpt_path`` when a resume is asked for: the file is chosen inside fit (``AgreeOnResume``).

    Lightning asks whether a path was given before the choice (yes: one may be) and reads it after; when rank 0
    found nothing to resume, the object is then false and Lightning restores nothing."""

    def __init__(self, request: str):
        self.request = request  # ckpt_path as given: last, a run or checkpoint directory, or a file
        self.path: Path | None = None
        self.decided = False

    def decide(self, path: Path | None) -> None:
        self.path, self.decided = path, True

    def __bool__(self) -> bool:
        return self.path is not None if self.decided else True

    def __fspath__(self) -> str:
        if not self.decided or self.path is None:
            raise RuntimeError(f"ckpt_path={self.request!r} is read before rank 0 chose a file (AgreeOnResume.setup)")
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path) if self.decided else f"{self.request} (to be chosen by rank 0)"

    __repr__ = __str__


class AgreeOnResume(Callback):
    """Global rank 0 chooses and verifies the checkpoint; every rank resumes from its choice."""

    def __init__(self, checkpoint: AgreedCheckpoint, output_dir: str | Path, model_config: dict):
        self.checkpoint = checkpoint
        self.output_dir = output_dir
        self.model_config = model_config

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.checkpoint.decided:
            return
        choice = refusal = None
        if trainer.is_global_zero:
            try:
                found = resolve_resume(self.checkpoint.request, self.output_dir)
                if found is not None:
                    refuse_unresumable(found, self.model_config)
                    choice = str(found)
            except ConfigError as e:
                refusal = str(e)
        choice, refusal = trainer.strategy.broadcast((choice, refusal), src=0)
        if refusal is not None:
            raise ConfigError(refusal)  # on every rank: the job stops with one line, no rank left waiting
        self.checkpoint.decide(Path(choice) if choice is not None else None)

    def on_fit_start(self, trainer, pl_module) -> None:
        # nothing was resumed: Lightning keeps the (false) object as trainer.ckpt_path, which callbacks read as
        # a path (ModelCheckpoint never deletes the file a run resumed from); say None, as for a fresh run
        if self.checkpoint.decided and self.checkpoint.path is None:
            trainer.ckpt_path = None
