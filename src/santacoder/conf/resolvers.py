"""What Hydra needs from Python before it composes a config: resolvers, and the config nodes whose values
live in Python (the model presets). ``train.py``, ``eval.py``, ``santacoder.compose`` and the tests call
``setup_hydra()`` first.

- ``${run_id:}``: the run directory's name, the same on every rank of a job (see ``santacoder.conf.run_ids``).
- ``${run_dir:ROOT,CKPT}``: the run directory: that of the checkpoint being resumed, else ``ROOT/<run_id>``.
- ``${on_rank_zero:A,B}``: A in the job's global rank 0, B in every other rank. ``configs/hydra/default.yaml``
  uses it so that only rank 0 writes the run's ``.hydra/`` config copy and log file.
- Config group ``model/config``: one option per preset of ``santacoder.config.PRESETS``, holding every
  ``GPTConfig`` field, so ``configs/model/*.yaml`` pick a preset by name (``- config: tiny``) and the command
  line can still override any field (``model.config.n_layer=2``).
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from santacoder.conf.run_ids import is_global_rank_zero, run_dir, run_id
from santacoder.config import PRESETS, GPTConfig


def _on_rank_zero(value, otherwise=None):
    return value if is_global_rank_zero() else otherwise


def setup_hydra() -> None:
    """Register the resolvers and the Python-defined config nodes (idempotent)."""
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", run_id, use_cache=True)
    if not OmegaConf.has_resolver("run_dir"):
        OmegaConf.register_new_resolver("run_dir", run_dir, use_cache=True)
    if not OmegaConf.has_resolver("on_rank_zero"):
        OmegaConf.register_new_resolver("on_rank_zero", _on_rank_zero)
    store = ConfigStore.instance()
    for name in PRESETS:
        store.store(group="model/config", name=name, node=GPTConfig.from_name(name).to_dict())
