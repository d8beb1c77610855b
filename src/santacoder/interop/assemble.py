"""From a checkpoint's config and weights (in this project's parameter names) to a ready ``GPT``.

Every layout reader produces a ``Checkpoint``; ``build_model`` checks the weights against the config --
every parameter present, nothing extra, every shape as the config implies -- so a checkpoint whose files
disagree fails with a message naming the tensor, never with a half-loaded model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from santacoder.errors import ConfigError
from santacoder.model import GPT, GPTConfig

LM_HEAD = "lm_head.weight"
WTE = "transformer.wte.weight"
# Causal-mask buffers that GPT-2-style modules (the original santacoder code, old GPTBigCode) store next to
# their weights; our attention builds its mask on the fly.
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


@dataclass
class Checkpoint:
    """A checkpoint opened but (where the format allows) not yet read: its layout, shape and stored dtype."""

    layout: str  # one of santacoder.interop.detect.LAYOUTS
    path: Path  # the file or directory holding the weights
    config: GPTConfig
    dtype: torch.dtype  # the dtype the weights are stored in
    read_weights: Callable[[], dict[str, torch.Tensor]]  # this project's names; the tied lm_head left out

    def num_params(self) -> int:
        """Parameters of the model the checkpoint describes (tied LM head counted once)."""
        with torch.device("meta"):
            return GPT(self.config).num_params()


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """``None`` means float32: what training (with or without autocast) and CPU inference expect."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        key = dtype.removeprefix("torch.").lower()
        if key not in DTYPES:
            raise ConfigError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
        return DTYPES[key]
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ConfigError(f"dtype {dtype!r} must be a floating torch.dtype such as torch.float16")
    return dtype


def drop_tied_head(weights: dict[str, torch.Tensor], source: str, tied_flag: bool = True) -> dict[str, torch.Tensor]:
    """Remove ``lm_head.weight`` after checking it is the token embedding: our GPT always ties them."""
    head = weights.pop(LM_HEAD, None)
    wte = weights.get(WTE)
    if head is None:
        if not tied_flag:
            raise ConfigError(
                f"{source} declares untied input and output embeddings but stores no lm_head.weight; "
                "this project's GPT ties them, so it cannot represent this model"
            )
        return weights
    if wte is not None and (head.shape != wte.shape or not torch.equal(head, wte)):
        raise ConfigError(
            f"{source} has an lm_head.weight that differs from its token embedding (untied embeddings); this "
            "project's GPT ties the LM head to transformer.wte as SantaCoder does, so it cannot load this model"
        )
    return weights


def expected_shapes(config: GPTConfig) -> dict[str, torch.Size]:
    with torch.device("meta"):
        model = GPT(config)
    return {name: t.shape for name, t in model.state_dict().items() if name != LM_HEAD}


def check_weights(config: GPTConfig, weights: dict[str, torch.Tensor], source: str) -> None:
    """A ConfigError unless ``weights`` holds exactly the parameters ``config`` implies, in their shapes."""
    expected = expected_shapes(config)
    missing = [n for n in expected if n not in weights]
    unexpected = [n for n in weights if n not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[:3]})")
        raise ConfigError(
            f"{source}: the weights do not match the model its config describes: {'; '.join(parts)}. "
            "The checkpoint is incomplete or of a different architecture."
        )
    for name, shape in expected.items():
        if weights[name].shape != shape:
            raise ConfigError(
                f"{source}: tensor {name} has shape {tuple(weights[name].shape)} but the config (n_embd="
                f"{config.n_embd}, n_head={config.n_head}, n_inner={config.inner_dim}, vocab_size="
                f"{config.vocab_size}, n_positions={config.n_positions}, multi_query={config.multi_query}) "
                f"implies {tuple(shape)}; the config and the weights disagree"
            )


def build_model(
    checkpoint: Checkpoint, device: torch.device | str = "cpu", dtype: torch.dtype | str | None = None
) -> GPT:
    """The ``GPT`` of ``checkpoint`` with its weights, on ``device`` in ``dtype``, in eval mode."""
    dtype = resolve_dtype(dtype)
    source = f"{checkpoint.layout} checkpoint {str(checkpoint.path)!r}"
    weights = checkpoint.read_weights()
    check_weights(checkpoint.config, weights, source)
    # Build on the meta device and assign the checkpoint's tensors: no time spent on a random init that
    # would be overwritten, and no second copy of the weights in memory. copy=True so the model never
    # aliases a memory-mapped file that training may later overwrite.
    with torch.device("meta"):
        model = GPT(checkpoint.config)
    state = {name: t.to(device=device, dtype=dtype, copy=True) for name, t in weights.items()}
    state[LM_HEAD] = state[WTE]
    model.load_state_dict(state, strict=True, assign=True)
    model.lm_head.weight = model.transformer.wte.weight  # assign=True made two Parameters: tie them again
    return model.eval()
