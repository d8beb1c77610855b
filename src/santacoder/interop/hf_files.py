"""The files of a Hugging Face model directory: ``config.json`` and weights, single or sharded.

Weights are read from safetensors when present (no pickle at all), else from ``pytorch_model.bin`` with a
weights-only load. An ``*.index.json`` names the shards of a sharded checkpoint.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from santacoder.errors import ConfigError
from santacoder.interop.safe_unpickle import safe_torch_load

# In the order transformers prefers them.
WEIGHT_NAMES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}


def read_config_json(directory: Path) -> dict:
    path = directory / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{str(path)!r} is not a readable JSON model config: {e}") from e
    if not isinstance(config, dict):
        raise ConfigError(f"{str(path)!r} must hold a JSON object (a Hugging Face model config)")
    return config


def weight_files(directory: Path) -> list[Path]:
    """The weight files of ``directory`` (all shards of a sharded checkpoint), or a ConfigError."""
    for name in WEIGHT_NAMES:
        path = directory / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return [path]
        try:
            weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
            shards = list(dict.fromkeys(weight_map.values()))  # unique, in order of appearance
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ConfigError(f"{str(path)!r} is not a valid shard index (a JSON object with 'weight_map'): {e}") from e
        missing = [s for s in shards if not (directory / s).is_file()]
        if missing:
            raise ConfigError(f"shard index {str(path)!r} names files that are missing: {missing}")
        return [directory / s for s in shards]
    raise ConfigError(f"{str(directory)!r} has a config.json but no weights: expected one of {', '.join(WEIGHT_NAMES)}")


def _is_safetensors(path: Path) -> bool:
    return path.name.endswith(".safetensors")


def load_weights(files: list[Path]) -> dict[str, torch.Tensor]:
    """All tensors of ``files``, by name (on CPU, in their stored dtype)."""
    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        if _is_safetensors(path):
            try:
                with safe_open(str(path), framework="pt") as f:
                    part = {name: f.get_tensor(name) for name in f.keys()}
            except (SafetensorError, OSError) as e:
                raise ConfigError(f"{str(path)!r} is truncated or not a safetensors file: {e}") from e
        else:
            part = safe_torch_load(path)
            if not isinstance(part, dict) or not all(isinstance(v, torch.Tensor) for v in part.values()):
                raise ConfigError(f"{str(path)!r} is not a state dict (a mapping of names to tensors)")
        tensors.update(part)
    return tensors


def stored_dtype(files: list[Path]) -> torch.dtype:
    """The most common floating dtype of the weights, read from the headers only where possible."""
    counts: Counter[torch.dtype] = Counter()
    path = files[0]  # shards of one checkpoint share a dtype
    if _is_safetensors(path):
        try:
            with safe_open(str(path), framework="pt") as f:
                for name in f.keys():
                    counts[_SAFETENSORS_DTYPES.get(f.get_slice(name).get_dtype())] += 1
        except (SafetensorError, OSError) as e:
            raise ConfigError(f"{str(path)!r} is truncated or not a safetensors file: {e}") from e
    else:
        for tensor in load_weights([path]).values():  # memory-mapped: reads the pickle, not the data
            counts[tensor.dtype] += 1
    counts.pop(None, None)
    floating = {d: n for d, n in counts.items() if d.is_floating_point}
    return max(floating, key=floating.get) if floating else torch.float32
