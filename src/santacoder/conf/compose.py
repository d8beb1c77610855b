"""The project's Hydra configs from Python (a notebook, a script, a test), without a Hydra run.

    cfg = santacoder.compose(["model.config.n_layer=2", "data.seq_len=128"])
    datamodule = build(cfg, "data")           # santacoder.conf.build: the same instantiate calls train.py makes
    resolve_model_config(cfg, datamodule.tokenizer_size())  # santacoder.training.preflight: model.config.vocab_size
    metrics = train(cfg)                      # santacoder.training.task.train: or the whole run

``train.py`` gets two values from its surroundings that a notebook lacks: ``paths.root_dir`` (the environment's
``PROJECT_ROOT``) and ``paths.output_dir`` (Hydra's run directory). Here the root is ``PROJECT_ROOT`` when set,
else this checkout, and the output directory is the run directory the entry point would choose
(``logs/<task>/runs/<run id>``, or the run being resumed), unless ``output_dir`` is given. The result is resolved.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

from santacoder.conf.resolvers import setup_hydra
from santacoder.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
CONFIG_DIR = REPO / "configs"


def compose(
    overrides: list[str] | tuple[str, ...] = (),
    *,
    config_name: str = "train",
    output_dir: str | Path | None = None,
    root_dir: str | Path | None = None,
    resolve: bool = True,
) -> DictConfig:
    """``configs/<config_name>.yaml`` with ``overrides``, as ``python <config_name>.py <overrides>`` composes it;
    see the module's doc for ``paths.root_dir`` and ``paths.output_dir``. ``resolve=False`` keeps the
    interpolations, so that a later change (say of ``paths.output_dir``) reaches every value built from it."""
    if not (CONFIG_DIR / f"{config_name}.yaml").is_file():
        raise ConfigError(
            f"no {config_name}.yaml in {CONFIG_DIR}: santacoder.compose reads the configs of a checkout "
            "(install it with `pip install -e .` from the repository)"
        )
    setup_hydra()
    root = Path(root_dir or os.environ.get("PROJECT_ROOT") or REPO).resolve()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose(
            config_name, overrides=[f"paths.root_dir={root}", *overrides], return_hydra_config=output_dir is None
        )
    with open_dict(cfg):
        if output_dir is None:  # the directory `python <config_name>.py` would run in (configs/hydra, eval.yaml)
            output_dir = cfg.hydra.run.dir
            del cfg["hydra"]
        cfg.paths.output_dir = str(Path(output_dir).resolve())
    if resolve:
        OmegaConf.resolve(cfg)
    return cfg
