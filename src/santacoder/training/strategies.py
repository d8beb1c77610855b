"""Strategy factories that YAML can name, for what Lightning's strategies take as Python objects."""

from __future__ import annotations

from hydra.utils import get_class
from lightning.pytorch.strategies import FSDPStrategy

from santacoder.errors import ConfigError

SHARDED_REFUSAL = (
    "trainer.strategy.state_dict_type=sharded is not supported: it writes each checkpoint as a directory, which "
    "this project's resume, retention and tools (santacoder info, load, convert) do not read yet; use "
    "trainer.strategy.state_dict_type=full (rank 0 gathers one ordinary checkpoint file)"
)


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

    ``state_dict_type="full"`` gathers one ordinary checkpoint on rank 0 (loadable anywhere). "sharded" (one
    directory of per-rank files) is refused until the checkpoint code reads directories: see SHARDED_REFUSAL.
    The values live in configs/trainer/fsdp.yaml.
    """
    if state_dict_type != "full":
        raise ConfigError(
            SHARDED_REFUSAL
            if state_dict_type == "sharded"
            else f"trainer.strategy.state_dict_type={state_dict_type!r} is not one of full, sharded"
        )
    block = get_class(wrap_block)
    return FSDPStrategy(
        auto_wrap_policy={block},
        activation_checkpointing_policy={block} if activation_checkpointing else None,
        sharding_strategy=sharding_strategy,
        state_dict_type=state_dict_type,
        cpu_offload=cpu_offload,
        **kwargs,
    )
