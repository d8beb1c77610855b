"""``train/tokens_per_sec``, ``train/samples_per_sec`` and ``train/mfu`` (see ``santacoder.training.flops`` for what
MFU is computed from)."""

from __future__ import annotations

import logging
import time

import torch
from lightning.fabric.utilities.throughput import Throughput
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from santacoder.errors import ConfigError
from santacoder.training.flops import compute_dtype, peak_flops

log = logging.getLogger(__name__)


class SantaCoderThroughputMonitor(Callback):
    """Logs training throughput and MFU, averaged over the last ``window_size`` batches, from public hooks:

    ``train/tokens_per_sec`` and ``train/samples_per_sec`` (all devices), ``train/device/tokens_per_sec``,
    ``train/device/samples_per_sec``, ``train/device/tflops_per_sec`` and ``train/mfu`` (per device). Values go
    through ``LightningModule.log``, so loggers receive them every ``trainer.log_every_n_steps`` steps and
    ``metrics.json`` holds the last. Validation (and what runs with it) is not counted as training time. The
    module's ``flops_per_batch`` is the model FLOPs of one micro batch on one device.
    """

    def __init__(self, *, window_size: int, peak_flops: float | None = None):
        if window_size < 2:
            raise ConfigError(f"callbacks.throughput.window_size={window_size} must be at least 2 batches")
        self.peak_flops_override = peak_flops
        self.window_size = window_size
        self.throughput: Throughput | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        dtype = compute_dtype(trainer.precision)
        peak, source = peak_flops(trainer.strategy.root_device, dtype, self.peak_flops_override)
        self.throughput = Throughput(available_flops=peak, world_size=trainer.world_size, window_size=self.window_size)
        self._peak_description = (peak, source, dtype)

    def on_train_start(self, trainer, pl_module) -> None:
        self.throughput.reset()
        self._elapsed, self._batches, self._samples, self._tokens = 0.0, 0, 0, 0
        self._mark = time.perf_counter()
        self._log_formula(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()  # kernels are asynchronous: wait for this batch's before reading the clock
        now = time.perf_counter()
        self._elapsed += now - self._mark
        self._mark = now
        ids = batch["input_ids"]
        self._batches += 1
        self._samples += ids.shape[0]
        self._tokens += ids.numel()
        self.throughput.update(
            time=self._elapsed,
            batches=self._batches,
            samples=self._samples,
            lengths=self._tokens,
            flops=getattr(pl_module, "flops_per_batch", None),
        )
        raw = self.throughput.compute()
        world = trainer.world_size
        metrics = {}
        if "device/samples_per_sec" in raw:
            metrics["train/device/samples_per_sec"] = raw["device/samples_per_sec"]
            metrics["train/samples_per_sec"] = raw["device/samples_per_sec"] * world
        if "device/items_per_sec" in raw:
            metrics["train/device/tokens_per_sec"] = raw["device/items_per_sec"]
            metrics["train/tokens_per_sec"] = raw["device/items_per_sec"] * world
        if "device/flops_per_sec" in raw:
            metrics["train/device/tflops_per_sec"] = raw["device/flops_per_sec"] / 1e12
        if "device/mfu" in raw:
            metrics["train/mfu"] = raw["device/mfu"]
        if metrics:  # once the window is full; loggers receive them at trainer.log_every_n_steps
            pl_module.log_dict(metrics, on_step=True, on_epoch=False)

    def on_validation_end(self, trainer, pl_module) -> None:
        self._mark = time.perf_counter()  # the next training batch is timed from here, not from before validation

    @rank_zero_only
    def _log_formula(self, pl_module) -> None:
        peak, source, dtype = self._peak_description
        measured = getattr(pl_module, "flops_per_batch", None)
        analytic = getattr(pl_module, "analytic_flops_per_batch", None)
        if measured and analytic:
            log.info(
                "MFU = model FLOP/s per device / peak. Model FLOPs per micro batch per device (forward + backward, "
                "recomputation not counted): %.4e counted by torch's FLOP counter on the meta device; "
                "6N + 12*L*H*Q*T gives %.4e (%.2f%% apart)",
                measured,
                analytic,
                100 * abs(measured - analytic) / analytic,
            )
        peak_txt = f"{peak / 1e12:.1f} TFLOP/s" if peak else "unknown, so no MFU is logged"
        log.info("peak per device for %s: %s, from %s", dtype, peak_txt, source)
