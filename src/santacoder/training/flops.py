"""What MFU is computed from: model FLOPs per batch (counted on the meta device, and the 6N + attention estimate),
the dtype the matmuls run in, and the peak FLOP/s of one device. ``SantaCoderThroughputMonitor``
(``santacoder.training.callbacks``) logs the resulting rates.

MFU = achieved model FLOPs per second / peak FLOPs per second of the device, where model FLOPs are those of
the forward and backward matmuls (no recomputation counted, so activation checkpointing does not inflate it).
"""

from __future__ import annotations

import torch
from lightning.fabric.utilities.throughput import get_available_flops, measure_flops

from santacoder.config import GPTConfig
from santacoder.model.gpt import GPT

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
