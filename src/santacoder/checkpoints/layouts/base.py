"""What every checkpoint layout's reader returns: a ``Checkpoint`` (layout, shape, stored dtype, and its weights read
only on demand, in this project's parameter names), and the check that a stored LM head is the tied embedding."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from santacoder.config import GPTConfig
from santacoder.errors import ConfigError
from santacoder.model import GPT

LM_HEAD = "lm_head.weight"
WTE = "transformer.wte.weight"
# Causal-mask buffers that GPT-2-style modules (the original santacoder code, old GPTBigCode) store next to
# their weights; our attention builds its mask on the fly.
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")
SUPPORTED = (
    "a .ckpt of this project, a Hugging Face GPTBigCode or original santacoder directory (config.json + "
    "weights), or a Megatron-LM checkpoint (save directory, iter_*/release directory, or model_optim_rng.pt)"
)


@dataclass
class Checkpoint:
    """A checkpoint opened but (where the format allows) not yet read: its layout, shape and stored dtype."""

    layout: str  # one of LAYOUTS
    path: Path  # the file or directory holding the weights
    config: GPTConfig
    dtype: torch.dtype  # the dtype the weights are stored in
    read_weights: Callable[[], dict[str, torch.Tensor]]  # this project's names; the tied lm_head left out
    # what a layout knows beyond the model, for `santacoder info`: training step, last val/loss, tokenizer
    details: dict[str, str] = field(default_factory=dict)

    def num_params(self) -> int:
        """Parameters of the model the checkpoint describes (tied LM head counted once)."""
        with torch.device("meta"):
            return GPT(self.config).num_params()


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
