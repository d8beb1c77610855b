"""Train a SantaCoder-style model: `python train.py [hydra overrides]` (see configs/train.yaml)."""

import os
from pathlib import Path

import hydra

from santacoder.conf.resolvers import setup_hydra
from santacoder.training.task import main as train_main

# configs/paths/default.yaml puts data/ and logs/ under PROJECT_ROOT: this repository unless set
os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))
setup_hydra()


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg):
    return train_main(cfg)


if __name__ == "__main__":
    main()
