"""Stops every rank at the same optimizer-step boundary once any rank has received a stopping signal
(``santacoder.training.signals`` records them)."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from santacoder.training import signals


class StopOnSignal(Callback):
    def __init__(self):
        self._stepped_to = 0  # the global step after the last optimizer step seen

    def on_train_start(self, trainer, pl_module) -> None:
        self._stepped_to = trainer.global_step
        signals.start_training()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # only where this batch ended an optimizer step: the checkpoint saved on the way out must not count
        # micro-batches of an accumulation window as seen without holding their gradients
        if trainer.global_step == self._stepped_to:
            return
        self._stepped_to = trainer.global_step
        stop = signals.stop_signal() is not None
        if trainer.world_size > 1:  # one small all-reduce per step, next to Lightning's own per-step broadcast
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            raise SIGTERMException()  # Lightning: on_exception (RunCheckpoint saves), teardown, re-raised

    def on_train_end(self, trainer, pl_module) -> None:
        signals.end_training()
