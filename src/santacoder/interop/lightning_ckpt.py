"""Checkpoints of this project: Lightning ``.ckpt`` files of ``SantaCoderLitModule``.

``hyper_parameters["config"]`` is a plain dict of GPTConfig fields and ``state_dict`` holds the module's
tensors with the GPT under ``model.``. They are read with a weights-only load (plain containers and tensors
only), and written in the same shape so ``SantaCoderLitModule.load_from_checkpoint`` and training resume
from weights alone both work.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from santacoder.errors import ConfigError
from santacoder.interop.assemble import Checkpoint, drop_tied_head
from santacoder.interop.safe_unpickle import safe_torch_load
from santacoder.model import GPT, GPTConfig

LAYOUT = "lightning"
PREFIX = "model."


def is_lightning_checkpoint(obj: object) -> bool:
    return isinstance(obj, dict) and "state_dict" in obj and "hyper_parameters" in obj


def _config(obj: dict, source: str) -> GPTConfig:
    config = obj["hyper_parameters"].get("config") if isinstance(obj["hyper_parameters"], dict) else None
    if not isinstance(config, dict):
        raise ConfigError(
            f"{source} has no hyper_parameters['config'] dict; it was not written by this project's SantaCoderLitModule"
        )
    known = {f.name for f in dataclasses.fields(GPTConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ConfigError(f"{source}: hyper_parameters['config'] has fields GPTConfig does not know: {unknown}")
    try:
        return GPTConfig(**config)
    except ConfigError as e:
        raise ConfigError(f"{source}: hyper_parameters['config'] is invalid: {e}") from e


def open_checkpoint(path: Path) -> Checkpoint:
    source = f"checkpoint {str(path)!r}"
    obj = safe_torch_load(path)
    if not is_lightning_checkpoint(obj):
        hint = ""
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            hint = (
                " It is a bare state dict, which has no model config: put it in a directory next to its "
                "Hugging Face config.json (as pytorch_model.bin)."
            )
        raise ConfigError(
            f"{source} is not a Lightning checkpoint of this project (no state_dict/hyper_parameters).{hint}"
        )
    config = _config(obj, source)
    state = obj["state_dict"]
    weights = {k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(PREFIX) and isinstance(v, torch.Tensor)}
    wte = weights.get("transformer.wte.weight")
    dtype = wte.dtype if wte is not None else torch.float32
    return Checkpoint(LAYOUT, path, config, dtype, lambda: drop_tied_head(dict(weights), source))


def save_checkpoint(model: GPT, path: str | Path) -> Path:
    """Write ``model`` as a checkpoint of this project (weights and config; no optimizer or loop state).

    ``SantaCoderLitModule.load_from_checkpoint(path)`` rebuilds the module from it, with the default optimizer
    and schedule; ``santacoder.interop.load(path)`` returns the GPT.
    """
    import lightning

    if not isinstance(model, GPT):
        raise ConfigError(f"save_checkpoint expects a santacoder GPT, got {type(model).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()}
    # Keys as SantaCoderLitModule.state_dict() has them: the tied head under both names, stored once.
    state[PREFIX + "lm_head.weight"] = state[PREFIX + "transformer.wte.weight"]
    checkpoint = {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": lightning.__version__,
        "state_dict": state,
        "hyper_parameters": {"config": model.config.to_dict(), "optimizer": None, "scheduler": None},
    }
    torch.save(checkpoint, path)
    return path
