"""Throughput and MFU: FLOPs per batch measured on the meta device, peak FLOPs per device, and a
``ThroughputMonitor`` that logs ``train/tokens_per_sec``, ``train/samples_per_sec`` and ``train/mfu``.

MFU = achieved model FLOPs per second / peak FLOPs per second of the device, where model FLOPs are those of
the forward and backward matmuls (no recomputation counted, so activation checkpointing does not inflate it).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from lightning.fabric.utilities.throughput import get_available_flops, measure_flops
from lightning.pytorch.callbacks import ThroughputMonitor
from lightning.pytorch.utilities import rank_zero_only

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
    meta_config = GPTConfig(**{**config.to_dict(), "attn_impl": "math"})  # countable ops, same FLOPs as a kernel
    with torch.device("meta"):
        model = GPT(meta_config)
        ids = torch.zeros(batch_size, seq_len, dtype=torch.long)
    return measure_flops(model, lambda: model(ids), lambda logits: logits.float().logsumexp(-1).sum())


def _dtype_key(dtype: torch.dtype | str) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", "tfloat32": "tf32"}.get(dtype, "fp32")


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


class SantaCoderThroughputMonitor(ThroughputMonitor):
    """Lightning's ThroughputMonitor with tokens as items, a peak-FLOPs fallback, and metric names
    ``train/tokens_per_sec`` (global), ``train/device/tokens_per_sec``, ``train/mfu`` (per device)."""

    def __init__(self, peak_flops: float | None = None, window_size: int = 20, **kwargs: Any):
        super().__init__(
            batch_size_fn=lambda batch: batch["input_ids"].shape[0],
            length_fn=lambda batch: batch["input_ids"].numel(),
            window_size=window_size,
            **kwargs,
        )
        self.peak_flops_override = peak_flops

    def setup(self, trainer, pl_module, stage: str) -> None:
        from lightning.fabric.utilities.throughput import _plugin_to_compute_dtype

        super().setup(trainer, pl_module, stage)
        dtype = _plugin_to_compute_dtype(trainer.precision_plugin)
        peak, source = peak_flops(trainer.strategy.root_device, dtype, self.peak_flops_override)
        for throughput in self._throughputs.values():
            throughput.available_flops = peak
        self.available_flops = peak
        self._peak_description = (peak, source, dtype)

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self._log_formula(pl_module)

    @rank_zero_only
    def _log_formula(self, pl_module) -> None:
        peak, source, dtype = self._peak_description
        measured = getattr(pl_module, "flops_per_batch", None)
        analytic = getattr(pl_module, "analytic_flops_per_batch", None)
        if measured and analytic:
            log.info(
                "MFU = model FLOP/s per device / peak. Model FLOPs per step (all devices, forward + backward, "
                "recomputation not counted): %.4e counted by torch's FLOP counter on the meta device; "
                "6N + 12*L*H*Q*T gives %.4e (%.1f%% apart)",
                measured,
                analytic,
                100 * abs(measured - analytic) / analytic,
            )
        peak_txt = f"{peak / 1e12:.1f} TFLOP/s" if peak else "unknown, so no MFU is logged"
        log.info("peak per device for %s: %s, from %s", dtype, peak_txt, source)

    def _compute(self, trainer, iter_num: int | None = None) -> None:
        if not trainer._logger_connector.should_update_logs:
            return
        stage = trainer.state.stage
        raw = self._throughputs[stage].compute()
        world = trainer.world_size
        prefix = stage.value
        metrics = {}
        if "device/samples_per_sec" in raw:
            metrics[f"{prefix}/device/samples_per_sec"] = raw["device/samples_per_sec"]
            metrics[f"{prefix}/samples_per_sec"] = raw["device/samples_per_sec"] * world
        if "device/items_per_sec" in raw:
            metrics[f"{prefix}/device/tokens_per_sec"] = raw["device/items_per_sec"]
            metrics[f"{prefix}/tokens_per_sec"] = raw["device/items_per_sec"] * world
        if "device/flops_per_sec" in raw:
            metrics[f"{prefix}/device/tflops_per_sec"] = raw["device/flops_per_sec"] / 1e12
        if "device/mfu" in raw:
            metrics[f"{prefix}/mfu"] = raw["device/mfu"]
        if not metrics:
            return
        trainer._logger_connector.log_metrics(metrics, step=iter_num)
        # also expose them as callback metrics, so the progress bar and metrics.json see the latest values
        trainer.callback_metrics.update({k: torch.tensor(float(v)) for k, v in metrics.items()})
