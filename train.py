"""Train a SantaCoder-style model: `python train.py [hydra overrides]` (see configs/train.yaml)."""

import os
from pathlib import Path

import hydra

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

from santacoder.train import main as train_main  # noqa: E402 (after PROJECT_ROOT is set)


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg):
    return train_main(cfg)


if __name__ == "__main__":
    main()
