"""Strategy factories that YAML can name, for what Lightning's strategies take as Python objects."""

from __future__ import annotations

from hydra.utils import get_class
from lightning.pytorch.strategies import FSDPStrategy


def fsdp_strategy(
    *,
    wrap_block: str,
    activation_checkpointing: bool,
    sharding_strategy: str,
    state_dict_type: str,
    cpu_offload: bool,
    **kwargs,
) -> FSDPStrategy:
    """FSDP that wraps (and optionally checkpoints) each transformer block, named by its import path.

    ``state_dict_type="full"`` gathers one ordinary checkpoint on rank 0 (loadable anywhere); "sharded" writes
    one file per rank, faster for large models. The values live in configs/trainer/fsdp.yaml.
    """
    block = get_class(wrap_block)
    return FSDPStrategy(
        auto_wrap_policy={block},
        activation_checkpointing_policy={block} if activation_checkpointing else None,
        sharding_strategy=sharding_strategy,
        state_dict_type=state_dict_type,
        cpu_offload=cpu_offload,
        **kwargs,
    )
