"""When a run writes its checkpoints: ``last.ckpt`` is always the newest state, ``step_<n>.ckpt`` every N steps.

Saves happen every ``every_n_train_steps`` optimizer steps, right after the step (``step_<n>.ckpt``, never inside
a gradient-accumulation window nor again at the step a run resumed at; the newest ``keep_last`` kept,
and ``last.ckpt`` as the same bytes), after each validation that follows an optimizer step, at the end of
training, and when a signal stops the run (``santacoder.training.signals``, which stops at a step boundary too).
``last.ckpt`` is linked and old files pruned once the new file is in place, by the checkpoint plugin (in its
writer thread when saves are asynchronous: ``santacoder.training.checkpoint_io``). The best checkpoint by
validation loss is Lightning's ``ModelCheckpoint``'s business (``best_step_<n>.ckpt``); this one never depends on
the loss, so resuming from ``last.ckpt`` never repeats work. Every file is written atomically
(``santacoder.checkpoints.storage``).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from santacoder.checkpoints.storage import TMP_SUFFIX, remove_leftovers, write_atomically
from santacoder.errors import ConfigError
from santacoder.training.checkpoint_io import AtomicCheckpointIO, unwrapped

log = logging.getLogger(__name__)

LAST = "last.ckpt"
PERIODIC = re.compile(r"step_(\d+)\.ckpt")


class RunCheckpoint(Checkpoint):
    def __init__(self, *, dirpath: str, every_n_train_steps: int, keep_last: int):
        if not isinstance(every_n_train_steps, int) or every_n_train_steps < 0:
            raise ConfigError(
                f"callbacks.run_checkpoint.every_n_train_steps={every_n_train_steps} must be an integer >= 0 "
                "(0: no periodic checkpoints; last.ckpt is still written at each validation and on a signal)"
            )
        if not isinstance(keep_last, int) or keep_last < 1:
            raise ConfigError(f"callbacks.run_checkpoint.keep_last={keep_last} must be an integer >= 1")
        self.dirpath = Path(dirpath)
        self.every_n_train_steps = every_n_train_steps
        self.keep_last = keep_last
        self._saved_step: int | None = None  # the step of the state last.ckpt holds, written by this process
        self._stepped_to = 0  # the global step after the last optimizer step this process saw
        self._at_step_boundary = True  # whether the last training batch ended an optimizer step
        self._final_step: int | None = None  # the step whose state was saved as the run's last

    @property
    def last_path(self) -> Path:
        return self.dirpath / LAST

    def setup(self, trainer, pl_module, stage: str) -> None:
        if not isinstance(unwrapped(trainer.strategy.checkpoint_io), AtomicCheckpointIO):
            log.warning(
                "the trainer's checkpoint_io is %s, not AtomicCheckpointIO: a save interrupted mid-write can "
                "leave a partial file (configs/trainer/default.yaml sets it under plugins)",
                type(trainer.strategy.checkpoint_io).__name__,
            )
        if trainer.is_global_zero:
            remove_leftovers(self.dirpath)

    # -- when -------------------------------------------------------------------------------------------

    def on_train_start(self, trainer, pl_module) -> None:
        self._stepped_to = trainer.global_step  # 0, or the step a run resumed at: its state is on file already

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # only where this batch ended an optimizer step: inside a gradient-accumulation window the state would
        # count micro-batches as seen whose gradients it does not hold (and a resumed run would rewrite the
        # file it resumed from at its first micro-batch)
        step = trainer.global_step
        self._at_step_boundary = step != self._stepped_to
        if not self._at_step_boundary:
            return
        self._stepped_to = step
        if self.every_n_train_steps and step % self.every_n_train_steps == 0 and step != self._saved_step:
            self._save(trainer, periodic=True)
        if _is_last_batch_of_training(trainer):
            # the final state, saved now: once the loop ends, Lightning counts the epoch as completed even when
            # max_steps stopped it midway, and a run resumed from that state to train longer would skip the
            # rest of the epoch (on_train_end then finds this step saved; a validation that follows saves again,
            # for its val/loss)
            self._save(trainer)
            self._final_step = step

    def on_validation_end(self, trainer, pl_module) -> None:
        # a validation inside an accumulation window (preflight refuses such intervals) is not saved: see above
        if not trainer.sanity_checking and trainer.state.fn == "fit" and self._at_step_boundary:
            self._save(trainer, again=trainer.global_step == self._final_step)

    def on_train_end(self, trainer, pl_module) -> None:
        self._save(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # Lightning raises SIGTERMException at a batch boundary on every rank alike: a consistent state to save.
        # Any other exception may come from the middle of a step, whose state is not worth keeping.
        if isinstance(exception, SIGTERMException):
            self._save(trainer)
            if trainer.is_global_zero:
                log.warning("saved %s at step %d", self.last_path, trainer.global_step)

    # -- how ----------------------------------------------------------------------------------------------

    def _save(self, trainer, periodic: bool = False, again: bool = False) -> None:
        step = trainer.global_step
        if trainer.fast_dev_run:
            return  # a smoke test of the code path, as Lightning's own ModelCheckpoint treats it
        if step == self._saved_step and not periodic and not again:
            return  # last.ckpt already holds this state
        if periodic:
            path = self.dirpath / f"step_{step:06d}.ckpt"
            plugin = unwrapped(trainer.strategy.checkpoint_io)
            publish = lambda: (self._link_as_last(path), self._prune())  # noqa: E731
            if trainer.is_global_zero and isinstance(plugin, AtomicCheckpointIO):
                plugin.then(path, publish)  # once the file is complete (a writer thread's job, if asynchronous)
            trainer.save_checkpoint(path, weights_only=False)
            if trainer.is_global_zero and not isinstance(plugin, AtomicCheckpointIO):
                publish()
        else:
            trainer.save_checkpoint(self.last_path, weights_only=False)
        self._saved_step = step

    def _link_as_last(self, path: Path) -> None:
        """Point last.ckpt at the periodic file's bytes (a hard link, renamed into place: atomic), or copy."""
        tmp = self.dirpath / f".{LAST}.{os.getpid()}{TMP_SUFFIX}"
        try:
            tmp.unlink(missing_ok=True)
            os.link(path, tmp)
        except OSError:  # a filesystem without hard links: the same bytes, written again, atomically
            with open(path, "rb") as src:
                write_atomically(self.last_path, lambda f: _copy(src, f))
            return
        os.replace(tmp, self.last_path)

    def _prune(self) -> None:
        periodic = sorted(
            (int(m.group(1)), p) for p in self.dirpath.glob("step_*.ckpt") if (m := PERIODIC.fullmatch(p.name))
        )
        for _, old in periodic[: -self.keep_last]:
            old.unlink(missing_ok=True)


def _is_last_batch_of_training(trainer) -> bool:
    if 0 <= trainer.max_steps <= trainer.global_step:
        return True
    last_epoch = (
        trainer.max_epochs is not None and trainer.max_epochs >= 0 and trainer.current_epoch + 1 >= trainer.max_epochs
    )
    return last_epoch and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch


def _copy(src, dst, chunk: int = 64 << 20) -> None:
    while block := src.read(chunk):
        dst.write(block)
