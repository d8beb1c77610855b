"""The public functions: load any supported checkpoint, read its shape, describe it, convert it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from santacoder.errors import ConfigError
from santacoder.interop.assemble import build_model, resolve_dtype
from santacoder.interop.detect import LAYOUTS, open_checkpoint
from santacoder.interop.hf import save_hf
from santacoder.interop.lightning_ckpt import save_checkpoint
from santacoder.model import GPT, GPTConfig
from santacoder.tokenizer import CodeTokenizer, load_tokenizer

CONVERT_TARGETS = ("hf", "ckpt")


def load(path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype | str | None = None) -> GPT:
    """A ``GPT`` with the weights at ``path``, on ``device``, in eval mode.

    ``path`` is a Lightning ``.ckpt`` of this project, a transformers GPTBigCode directory, an original
    ``bigcode/santacoder`` directory, or a Megatron-LM checkpoint (save directory, ``iter_*``/``release``
    directory or ``model_optim_rng.pt`` file); the layout is detected. ``dtype`` (a torch dtype or a name such
    as ``"bfloat16"``) defaults to float32 whatever the stored dtype. Raises ``ConfigError`` with an
    explanation for anything else, including files that are truncated, disagree with their config, or
    pickle objects a checkpoint never needs (no code from a file is ever run).
    """
    return build_model(open_checkpoint(path), device=device, dtype=dtype)


def read_checkpoint_config(path: str | Path) -> GPTConfig:
    """The model shape (and dropouts) of the checkpoint at ``path``, reading as little as the layout allows.

    Hugging Face directories: config.json only; Megatron and Lightning files: the pickle, with the tensors
    memory-mapped rather than read.
    """
    return open_checkpoint(path).config


@dataclass(frozen=True)
class CheckpointInfo:
    layout: str  # "lightning" | "gpt_bigcode" | "santacoder" | "megatron"
    description: str
    path: Path  # the file or directory the weights are read from
    config: GPTConfig
    num_params: int  # tied LM head counted once
    dtype: torch.dtype  # as stored

    def to_dict(self) -> dict:
        return {
            "layout": self.layout,
            "description": self.description,
            "path": str(self.path),
            "config": self.config.to_dict(),
            "head_dim": self.config.head_dim,
            "num_params": self.num_params,
            "dtype": str(self.dtype).removeprefix("torch."),
        }


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Layout, shape, parameter count and stored dtype of a checkpoint, without loading its weights."""
    checkpoint = open_checkpoint(path)
    return CheckpointInfo(
        layout=checkpoint.layout,
        description=LAYOUTS[checkpoint.layout],
        path=checkpoint.path,
        config=checkpoint.config,
        num_params=checkpoint.num_params(),
        dtype=checkpoint.dtype,
    )


def convert(
    source: str | Path,
    out: str | Path,
    to: str = "hf",
    tokenizer: CodeTokenizer | str | Path | None = None,
    dtype: torch.dtype | str | None = None,
) -> Path:
    """Convert any supported checkpoint to a transformers GPTBigCode directory (``to="hf"``) or to a checkpoint
    of this project (``to="ckpt"``; where ``out`` is a directory or ends with "/", ``out/model.ckpt``).

    ``dtype`` defaults to the dtype the source stores. ``tokenizer`` (hf only) is written next to the model.
    Returns the path written.
    """
    if to not in CONVERT_TARGETS:
        raise ConfigError(f"conversion target {to!r} must be one of {CONVERT_TARGETS}")
    checkpoint = open_checkpoint(source)
    model = build_model(checkpoint, dtype=resolve_dtype(dtype) if dtype is not None else checkpoint.dtype)
    is_dir = str(out).endswith(("/", os.sep)) or Path(out).expanduser().is_dir()
    out = Path(out).expanduser()
    if to == "hf":
        if isinstance(tokenizer, str | Path):
            tokenizer = load_tokenizer(tokenizer)
        return save_hf(model, out, tokenizer=tokenizer)
    if tokenizer is not None:
        raise ConfigError("a tokenizer is written only with --to hf; checkpoints of this project hold the model only")
    if is_dir:
        out = out / "model.ckpt"
    return save_checkpoint(model, out)
