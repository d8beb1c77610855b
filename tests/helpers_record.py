"""Callbacks for tests, imported by train.py subprocesses too (tests/ is put on PYTHONPATH): one records each
rank's sample fingerprints, loss, learning rate, step and epoch of every batch; one poisons the weights; one
sends SIGTERM to the whole job at a given step, as SLURM and a terminal do."""

import hashlib
import json
import os
import signal
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


class RecordBatches(Callback):
    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.samples: list[str] = []
        self.losses: list[float] = []
        self.lrs: list[float] = []
        self.steps: list[int] = []
        self.epochs: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for row in batch["input_ids"]:
            self.samples.append(hashlib.sha1(row.numpy().tobytes()).hexdigest())
        # mean of the ranks' mean losses = the loss of the global batch when ranks hold equal token counts
        self.losses.append(float(trainer.strategy.reduce(outputs["loss"].detach(), reduce_op="mean")))
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])
        self.steps.append(trainer.global_step)
        self.epochs.append(trainer.current_epoch)

    def on_train_end(self, trainer, pl_module):
        self.write(trainer)

    def on_exception(self, trainer, pl_module, exception):
        self.write(trainer)  # a run stopped by a signal keeps its record too

    def write(self, trainer):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "samples": self.samples,
            "losses": self.losses,
            "lrs": self.lrs,
            "steps": self.steps,
            "epochs": self.epochs,
        }
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


class PoisonWeights(Callback):
    """Sets one weight to NaN after optimizer step ``step``, as a diverging run would, for the NaN guard's test."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("nan")


class SignalAt(Callback):
    """Global rank 0 sends SIGTERM to its process group (every rank of a job started in its own session) at the end
    of optimizer step ``step``: the ranks receive it at once, wherever each is."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step and trainer.is_global_zero:
            os.killpg(os.getpgrp(), signal.SIGTERM)
