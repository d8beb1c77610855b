"""Stops every rank at the same batch boundary once any rank has received a stopping signal
(``santacoder.training.signals`` records them)."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from santacoder.training import signals


class StopOnSignal(Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        signals.start_training()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        stop = signals.stop_signal() is not None
        if trainer.world_size > 1:  # one small all-reduce per step, next to Lightning's own per-step broadcast
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            raise SIGTERMException()  # Lightning: on_exception (RunCheckpoint saves), teardown, re-raised

    def on_train_end(self, trainer, pl_module) -> None:
        signals.end_training()
