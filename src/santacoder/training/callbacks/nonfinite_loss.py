"""Stops a run whose loss or weights are no longer finite, and never lets such weights replace a checkpoint."""

from __future__ import annotations

import logging

import torch
from lightning.pytorch.callbacks import Callback

from santacoder.errors import ConfigError
from santacoder.training.callbacks.loss_scale import LossScaleMonitor

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training stopped on non-finite losses or weights; the checkpoints written before are untouched."""


class NonFiniteLossGuard(Callback):
    """Reports a NaN/inf training loss with its step and stops the run after ``max_in_a_row`` in a row; never
    lets a checkpoint of non-finite weights be written.

    The count lives on the device (no host sync per step); it is read where the host waits anyway: every
    ``trainer.log_every_n_steps`` steps, before each checkpoint is written, and at the end. Before a save the
    weights themselves are checked too: in fp32 and bf16 one non-finite loss already makes them NaN (the
    optimizer applies its NaN gradient), and such a state must not replace ``last.ckpt``.

    Under fp16 (a GradScaler), a non-finite loss or gradient is the scaler's business: it skips that step and
    halves the scale, several times in a row at the start of a run, so those steps do not count. The run stops
    only when the scale collapses below ``min_loss_scale`` (Megatron-LM's floor is 1).
    """

    def __init__(self, *, max_in_a_row: int, min_loss_scale: float):
        if not isinstance(max_in_a_row, int) or max_in_a_row < 1:
            raise ConfigError(f"callbacks.nonfinite_loss.max_in_a_row={max_in_a_row} must be an integer >= 1")
        self.max_in_a_row = max_in_a_row
        self.min_loss_scale = min_loss_scale
        self._counts: torch.Tensor | None = None  # on the device: see _count

    def _count(self, loss: torch.Tensor, step: int) -> None:
        """Update [non-finite losses in a row now, the step that run started, longest run since the last check,
        the step that one started] with device ops only."""
        if self._counts is None:
            self._counts = torch.tensor([0, -1, 0, -1], dtype=torch.long, device=loss.device)
        in_a_row, run_start, longest, longest_start = self._counts.unbind()
        bad = ~torch.isfinite(loss)
        run_start = torch.where(bad & (in_a_row == 0), step, run_start)
        in_a_row = torch.where(bad, in_a_row + 1, 0)
        longest_start = torch.where(in_a_row > longest, run_start, longest_start)
        longest = torch.maximum(longest, in_a_row)
        self._counts = torch.stack([in_a_row, run_start, longest, longest_start])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if LossScaleMonitor._scaler(trainer) is None and isinstance(outputs, dict) and "loss" in outputs:
            self._count(outputs["loss"].detach(), trainer.global_step)
        if trainer.global_step % max(1, trainer.log_every_n_steps) == 0:
            self.check(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.check(trainer)
        finite = torch.stack([p.detach().isfinite().all() for p in pl_module.parameters() if p.numel()]).all()
        if not trainer.strategy.reduce_boolean_decision(bool(finite), all=True):
            raise NonFiniteLossError(
                f"the weights hold NaN or inf at step {trainer.global_step}: not saving them; the checkpoints "
                "already written are untouched (resume from the newest with ckpt_path=last, and lower the "
                "learning rate or use bf16/fp32 instead of fp16)"
            )

    def on_train_end(self, trainer, pl_module) -> None:
        self.check(trainer)

    def check(self, trainer) -> None:
        """Read the device-side counts (one sync, all ranks alike), report and stop if needed."""
        scaler = LossScaleMonitor._scaler(trainer)
        if scaler is not None:
            scale = float(scaler.get_scale())
            if scale < self.min_loss_scale:
                raise NonFiniteLossError(
                    f"the fp16 loss scale fell to {scale:g}, below callbacks.nonfinite_loss.min_loss_scale="
                    f"{self.min_loss_scale:g}, at step {trainer.global_step}: the gradients overflow at every "
                    "scale. Lower the learning rate or train in bf16; the checkpoints already written are untouched"
                )
            return
        if self._counts is None:
            return
        # the same decision on every rank: the worst of their counts (a NaN on one rank is a NaN gradient on all)
        counts = trainer.strategy.reduce(self._counts.to(torch.float32), reduce_op="max")
        in_a_row, run_start, longest, longest_start = (int(v) for v in counts.tolist())
        if longest == 0:
            return
        log.warning(
            "training loss NaN or inf for %d step(s) in a row from step %d (now %d in a row at step %d)",
            longest,
            longest_start,
            in_a_row,
            trainer.global_step,
        )
        if longest >= self.max_in_a_row:
            raise NonFiniteLossError(
                f"the training loss was NaN or inf for {longest} step(s) in a row from step {longest_start} "
                f"(callbacks.nonfinite_loss.max_in_a_row={self.max_in_a_row}); stopped without saving: the "
                "checkpoints already written are untouched. Resume from the newest (ckpt_path=last) with a lower "
                "learning rate, or look for a bad batch at that step"
            )
        self._counts[2:] = self._counts[:2]  # report a run again only when it grows
