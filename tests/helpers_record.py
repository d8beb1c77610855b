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
    of optimizer step ``step``, or ``micro_batch`` micro-batches later (inside the next accumulation window): the
    ranks receive it at once, wherever each is."""

    def __init__(self, step: int, micro_batch: int = 0):
        self.step, self.micro_batch = step, micro_batch
        self.seen = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step and trainer.is_global_zero:
            self.seen += 1
            if self.seen == self.micro_batch + 1:
                os.killpg(os.getpgrp(), signal.SIGTERM)


class CopyCheckpointAt(Callback):
    """Keeps a copy of ``last.ckpt`` as it was after the validation at optimizer step ``step`` (a later save
    replaces it), so that a test can resume from the kind of checkpoint a validation writes."""

    def __init__(self, step: int, copy_to: str):
        self.step, self.copy_to = step, Path(copy_to)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        (last,) = [cb.last_path for cb in trainer.callbacks if hasattr(cb, "last_path")]  # RunCheckpoint's
        if trainer.is_global_zero and not self.copy_to.exists() and last.is_file():
            if torch.load(last, map_location="cpu", weights_only=True)["global_step"] == self.step:
                self.copy_to.write_bytes(last.read_bytes())


class StaleListing(Callback):
    """Makes every rank but global rank 0 see a stale view of the run's checkpoint directory (as a network
    filesystem's cache can): the directory ``stale_view`` instead. Built before training, in every rank's process;
    it also counts the checksum verifications each rank makes, written to ``<out_dir>/verify_rank<r>.json``."""

    def __init__(self, stale_view: str, out_dir: str):
        from santacoder.checkpoints import discovery, storage

        self.out_dir = Path(out_dir)
        self.verifications = 0
        if int(os.environ.get("LOCAL_RANK", "0")) != 0:  # the children Lightning's launcher starts
            discovery.checkpoint_dir = lambda run_or_dir: Path(stale_view)
        verify = storage.verify

        def counting(*args, **kwargs):
            self.verifications += 1
            return verify(*args, **kwargs)

        storage.verify = counting

    def on_train_end(self, trainer, pl_module):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"verify_rank{trainer.global_rank}.json").write_text(json.dumps(self.verifications))


class SignalSelfIn(Callback):
    """Sends ``signal`` (a name: SIGUSR1) to this process from inside the Lightning hook ``hook``: ``setup``
    (before training: data prepared, nothing to save) or ``on_fit_end`` (after the last step)."""

    def __init__(self, hook: str, signal: str):
        self.sig = getattr(__import__("signal"), signal)
        setattr(self, hook, self._send)

    def _send(self, *args, **kwargs):
        os.kill(os.getpid(), self.sig)
