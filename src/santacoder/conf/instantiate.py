"""From a composed config to objects, and what the command line of a Hydra run said."""

from __future__ import annotations

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from santacoder.errors import ConfigError


def build(cfg: DictConfig, node: str, **kwargs):
    """Instantiate ``cfg.<node>``; a ConfigError raised inside is re-raised as it is (not wrapped by Hydra), so the
    entry points print its one line."""
    try:
        return instantiate(cfg[node], **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def command_line_overrides() -> dict[str, str]:
    """``key=value`` overrides given on the command line of this Hydra run (empty outside Hydra)."""
    if not HydraConfig.initialized():
        return {}
    pairs = (o.split("=", 1) for o in HydraConfig.get().overrides.task if "=" in o)
    return {k.lstrip("+~"): v for k, v in pairs}
