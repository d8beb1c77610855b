"""Evaluate a model: `python eval.py ckpt_path=<run dir | .ckpt | HF dir | Megatron dir>` (see configs/eval.yaml)."""

import os
from pathlib import Path

import hydra

from santacoder.conf.resolvers import setup_hydra
from santacoder.evaluation.task import main as eval_main

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))
setup_hydra()


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg):
    return eval_main(cfg)


if __name__ == "__main__":
    main()
