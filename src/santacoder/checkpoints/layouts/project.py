"""This project's own layout: a Lightning ``.ckpt`` of ``SantaCoderLitModule`` (its format:
``santacoder.checkpoints.format``), read as a ``Checkpoint`` like the other layouts, and written from a bare ``GPT``
(weights, config and tokenizer; no optimizer or loop state)."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import torch

from santacoder.checkpoints.format import (
    MODEL_PREFIX,
    TOKENIZER_KEY,
    attach_tokenizer,
    model_config,
    model_weights,
    read_meta,
    seal,
    stamp,
)
from santacoder.checkpoints.layouts.base import WTE, Checkpoint, drop_tied_head
from santacoder.checkpoints.storage import read_checkpoint, write_atomically
from santacoder.errors import ConfigError
from santacoder.model import GPT
from santacoder.text.tokenizer import CodeTokenizer

LAYOUT = "lightning"


def open_checkpoint(path: Path) -> Checkpoint:
    """The checkpoint of a ``.ckpt`` file of this project (the tensors memory-mapped, not read)."""
    source = f"checkpoint {str(path)!r}"
    obj = read_checkpoint(path)
    config = model_config(obj, source)
    weights = model_weights(obj)
    wte = weights.get(WTE)
    dtype = wte.dtype if wte is not None else torch.float32
    checkpoint = Checkpoint(LAYOUT, path, config, dtype, lambda: drop_tied_head(dict(weights), source))
    checkpoint.details = training_details(obj)
    return checkpoint


def training_details(obj: dict) -> dict[str, str]:
    """Where training was when the file was written: its step, the last and best ``val/loss`` that Lightning's
    checkpoint callback saw (none before the first validation, or in a file written by ``convert``), and whether
    the file carries its tokenizer."""
    details = {"step": str(obj.get("global_step", "?"))}
    meta = read_meta(obj)
    newest = meta.val_loss
    best, best_path = None, ""
    for name, state in (obj.get("callbacks") or {}).items():
        if name.startswith("ModelCheckpoint") and "val/loss" in name and isinstance(state, dict):
            best, best_path = state.get("best_model_score"), Path(str(state.get("best_model_path") or "")).name
            if newest is None:  # a file written before the format kept it: the callback's last score
                newest = state.get("current_score")
    if newest is None:
        details["val/loss"] = "none recorded (not validated yet, or not a training checkpoint)"
    else:
        details["val/loss"] = f"{float(newest):.4f}"
        if meta.val_step is not None and meta.val_step != obj.get("global_step"):
            details["val/loss"] += f" (validated at step {meta.val_step}, before this file was written)"
        if best is not None and float(best) < float(newest):
            details["val/loss"] += f" (best {float(best):.4f}: {best_path})"
    tokenizer = obj.get(TOKENIZER_KEY)
    details["tokenizer"] = (
        "carried inside (generate, infill, eval and convert need nothing else)"
        if tokenizer is not None
        else "none inside: pass --tokenizer <tokenizer.json> to generate, infill and convert"
    )
    return details


def save_checkpoint(model: GPT, path: str | Path, tokenizer: CodeTokenizer | None = None) -> Path:
    """Write ``model`` as a checkpoint of this project (weights and config; no optimizer or loop state).

    ``SantaCoderLitModule.load_from_checkpoint(path)`` rebuilds the module from it (without an optimizer: to
    train from these weights use ``model.init_from``); ``santacoder.load(path)`` returns the GPT.
    """
    if not isinstance(model, GPT):
        raise ConfigError(f"save_checkpoint expects a santacoder GPT, got {type(model).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {MODEL_PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()}
    # the tied head under both names, stored once (two .cpu() copies of a GPU tensor would be two tensors)
    state[MODEL_PREFIX + "lm_head.weight"] = state[MODEL_PREFIX + "transformer.wte.weight"]
    checkpoint = {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": version("lightning"),  # Lightning reads it to upgrade old files
        "state_dict": state,
        "hyper_parameters": {"config": model.config.to_dict(), "optimizer": None, "scheduler": None},
    }
    if tokenizer is not None:
        attach_tokenizer(checkpoint, tokenizer)
    stamp(checkpoint)
    seal(checkpoint)
    write_atomically(path, lambda f: torch.save(checkpoint, f))
    return path
