"""fp16's dynamic loss scale and the steps it skipped, as metrics."""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback


class LossScaleMonitor(Callback):
    """Logs fp16 dynamic loss scaling: ``train/loss_scale`` and ``train/skipped_steps``.

    With ``precision=16-mixed`` Lightning's GradScaler starts at 65536 (SantaCoder's initial loss scale). A step
    whose gradients overflow is not applied: the scaler skips ``optimizer.step()`` and halves the scale. Each
    drop of the scale is therefore one skipped step, counted here. Without a GradScaler (fp32, bf16) this
    callback does nothing.
    """

    def __init__(self) -> None:
        self.skipped_steps = 0
        self._last_scale: float | None = None
        self._last_step: int | None = None

    @staticmethod
    def _scaler(trainer) -> torch.amp.GradScaler | None:
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        return scaler if scaler is not None and scaler.is_enabled() else None

    def on_train_start(self, trainer, pl_module) -> None:
        # the scale before the first step (restored with the scaler when resuming), so that an overflow in the
        # very first step is counted too
        scaler = self._scaler(trainer)
        if scaler is not None and self._last_scale is None:
            self._last_scale = float(scaler.get_scale())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        scaler = self._scaler(trainer)
        # Lightning counts an optimizer step in global_step even when the scaler skips it, so an unchanged
        # global_step means this batch only accumulated gradients: the scale has not been updated yet.
        if scaler is None or trainer.global_step == self._last_step:
            return
        self._last_step = trainer.global_step
        scale = float(scaler.get_scale())
        if self._last_scale is not None and scale < self._last_scale:
            self.skipped_steps += 1
        self._last_scale = scale
        pl_module.log("train/loss_scale", scale, prog_bar=False)
        pl_module.log("train/skipped_steps", float(self.skipped_steps))

    def state_dict(self) -> dict:
        return {"skipped_steps": self.skipped_steps, "last_scale": self._last_scale}

    def load_state_dict(self, state_dict: dict) -> None:
        self.skipped_steps = state_dict.get("skipped_steps", 0)
        self._last_scale = state_dict.get("last_scale")
