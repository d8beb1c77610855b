"""A training run's saved config (``<run>/.hydra/config.yaml``), readable anywhere, and the project root that
entry points record in it.

Hydra saves the config unresolved. Runs written before the root was recorded keep
``paths.root_dir: ${oc.env:PROJECT_ROOT}``, which only resolves where that variable is set (train.py sets it for
its own process); read from a notebook or script it failed. ``record_root_dir`` makes an entry point pass the
root as an override, so the saved copy names it literally; ``load_run_config`` reads old runs too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from santacoder.conf.compose import REPO

ENV_ROOT = "${oc.env:PROJECT_ROOT}"


def project_root() -> Path:
    """Where ``data/`` and ``logs/`` go: ``PROJECT_ROOT`` when set, else this checkout (train.py's directory)."""
    return Path(os.environ.get("PROJECT_ROOT") or REPO).resolve()


def record_root_dir(argv: list[str] | None = None) -> None:
    """Pass ``paths.root_dir=<project_root()>`` on the command line (``sys.argv``) unless the user gave one, so
    the run's ``.hydra/config.yaml`` holds the path, not the environment variable. Every rank launched from
    this command line (Lightning re-runs ``sys.argv``) gets the same value."""
    argv = sys.argv if argv is None else argv
    if not any(a.lstrip("+~").startswith("paths.root_dir=") for a in argv[1:]):
        argv.append(f"paths.root_dir={project_root()}")


def load_run_config(run: str | Path) -> DictConfig:
    """``<run>/.hydra/config.yaml``, with ``paths.output_dir`` the run directory (Hydra's runtime value is gone
    outside the run) and, for runs that saved ``${oc.env:PROJECT_ROOT}``, the root train.py would have
    used: ``PROJECT_ROOT`` when set, else this checkout."""
    run = Path(run)
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    with open_dict(cfg):
        if "paths" in cfg:
            cfg.paths.output_dir = str(run)
            if OmegaConf.to_container(cfg.paths).get("root_dir") == ENV_ROOT:
                cfg.paths.root_dir = str(project_root())
    return cfg
