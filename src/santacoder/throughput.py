"""Throughput and MFU: FLOPs per batch measured on the meta device, peak FLOPs per device, and a
``ThroughputMonitor`` that logs ``train/tokens_per_sec``, ``train/samples_per_sec`` and ``train/mfu``.

MFU = achieved model FLOPs per second / peak FLOPs per second of the device, where model FLOPs are those of
the forward and backward matmuls (no recomputation counted, so activation checkpointing does not inflate it).
"""

from __future__ import annotations

import logging
import time

import torch
from lightning.fabric.utilities.throughput import Throughput, get_available_flops, measure_flops
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from santacoder.errors import ConfigError
from santacoder.model import GPT, GPTConfig

log = logging.getLogger(__name__)

# Dense peak FLOP/s for chips Lightning's table lacks or misnames (it expects "H200 SXM1"; the CUDA device name
# of an H200 is "NVIDIA H200"). Vendor data sheets, dense (no sparsity).
PEAK_FLOPS_FALLBACK: dict[str, dict[str, float]] = {
    "h200": {"bf16": 989e12, "fp16": 989e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "h100": {"bf16": 989e12, "fp16": 989e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "gh200": {"bf16": 989e12, "fp16": 989e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "b200": {"bf16": 2250e12, "fp16": 2250e12, "tf32": 1100e12, "fp32": 80e12},
    "l40s": {"bf16": 362e12, "fp16": 362e12, "tf32": 183e12, "fp32": 91.6e12},
    "a100": {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    "v100": {"fp16": 125e12, "fp32": 15.7e12},
}


def analytic_flops_per_token(config: GPTConfig, seq_len: int) -> float:
    """PaLM / nanoGPT estimate for forward + backward: 6 N + 12 L H Q T, with N the non-embedding-lookup
    parameters (the tied LM head is a matmul, the position table is not), L layers, H heads of size Q, T tokens."""
    with torch.device("meta"):
        n_params = GPT(config).num_params()
    n_matmul = n_params - config.n_positions * config.n_embd
    return 6 * n_matmul + 12 * config.n_layer * config.n_head * config.head_dim * seq_len


def measured_flops_per_batch(config: GPTConfig, batch_size: int, seq_len: int) -> int:
    """Forward + backward FLOPs of one micro batch, counted by torch's FLOP counter on the meta device."""
    with torch.device("meta"):
        model = GPT(config, attn_impl="math")  # countable ops, the same FLOPs as a fused kernel
        ids = torch.zeros(batch_size, seq_len, dtype=torch.long)
    return measure_flops(model, lambda: model(ids), lambda logits: logits.float().logsumexp(-1).sum())


# The dtype matmuls run in under each of Lightning's precision settings (trainer.precision).
_COMPUTE_DTYPES = {
    "16-mixed": torch.float16,
    "16-true": torch.float16,
    "bf16-mixed": torch.bfloat16,
    "bf16-true": torch.bfloat16,
    "64-true": torch.float64,
}


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype of the matmuls under ``trainer.precision`` (float32 for 32-true and anything unlisted)."""
    return _COMPUTE_DTYPES.get(str(precision), torch.float32)


def _dtype_key(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")


def peak_flops(device: torch.device, dtype: torch.dtype, override: float | None = None) -> tuple[float | None, str]:
    """Peak FLOP/s of one device for ``dtype`` and where the number comes from."""
    if override:
        return float(override), "config override (callbacks.throughput.peak_flops)"
    if device.type != "cuda":
        return None, f"unknown for {device.type} (set callbacks.throughput.peak_flops to get MFU)"
    flops = get_available_flops(device, dtype)
    name = torch.cuda.get_device_name(device)
    if flops:
        return float(flops), f"Lightning's table for {name}"
    chip = name.lower()
    key = _dtype_key(dtype)
    if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
        key = "tf32"
    for family, table in PEAK_FLOPS_FALLBACK.items():
        if family in chip.split() or f" {family}" in f" {chip}":
            if key in table:
                return table[key], f"fallback table for {name} ({family}, {key})"
    return None, f"unknown for {name!r} (set callbacks.throughput.peak_flops to get MFU)"


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
